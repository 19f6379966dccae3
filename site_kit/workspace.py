"""The site workspace: configuration from the kit, hub trust, rollback state, outbox, work."""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flsilo.format.artifact import Verified, scan_file, sig_path, verify_file
from flsilo.format.manifest import ID_PATTERN, KIND_PACKAGE
from flsilo.fs.atomic import atomic_writer, copy_file, write_text
from flsilo.fs.folders import require_folder
from flsilo.fs.untrusted import read_bounded
from flsilo.fs.workspace_paths import resolve_stored, stored_path
from flsilo.plans import federation as fed
from flsilo.plans.federation import read_toml
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import (
    DataError,
    MalformedInputError,
    PolicyError,
    UsageError,
    VerificationError,
    WorkspaceError,
)
from flsilo.signing.keys import (
    PrivateKey,
    PublicKey,
    fingerprint_matches,
    load_public_key,
    parse_public_line,
)
from flsilo.signing.rotation import MAX_CHAIN_BYTES, chain_path, load_chain, walk_chain
from flsilo.signing.sshsig import PACKAGE_NAMESPACE
from flsilo.signing.trust import HUB_PRINCIPAL, AllowedSigners, SignerEntry
from site_kit import record as site_record
from site_kit.state import SiteState, read_state, write_state

SITE_FILE = "site.toml"
KIT_FILE = "kit.toml"


@dataclass(frozen=True)
class SiteConfig:
    """``site.toml``: who this site is and where its key and data are.

    ``key`` and ``data`` are relative to the workspace when inside it, absolute otherwise
    (``flsilo.fs.workspace_paths``); ``site_key`` is the public key the hub enrolled.
    """

    site_id: str
    federation: str
    key: str
    hub_fingerprint: str
    site_key: str
    data: str | None = None
    data_format: str | None = None


class SiteWorkspace:
    """Everything ``flsilo train`` keeps between runs at one site."""

    def __init__(self, root: Path, config: SiteConfig) -> None:
        self.root = root
        self.config = config
        self.federation = fed.load(root / fed.FEDERATION_FILE)

    # -- paths ---------------------------------------------------------------------------
    @property
    def outbox(self) -> Path:
        return self.root / "outbox"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def packages(self) -> Path:
        return self.root / "packages"

    @property
    def key_path(self) -> Path:
        return resolve_stored(self.config.key, self.root)

    @property
    def data_path(self) -> Path | None:
        return resolve_stored(self.config.data, self.root) if self.config.data else None

    def recorded_data(self) -> Path | None:
        """The data set at ``site init`` (or ``site set-data``), refused when it has gone:
        the hint says how to point the workspace at its new place."""
        path = self.data_path
        if path is not None and not path.exists():
            raise DataError(
                "the site's data path (recorded in site.toml) does not exist",
                path=path,
                code=Code.DATA_MISSING,
                hint=f"if the data moved, run 'flsilo site set-data {shlex.quote(str(self.root))} NEW_PATH'; "
                "or give --data PATH for this run",
            )
        return path

    def check_signing_key(self, key: PrivateKey, key_path: Path) -> None:
        """Refuse a private key whose public half is not the key the hub enrolled."""
        enrolled = parse_public_line(self.config.site_key)
        if PublicKey.from_key(key.public_key()).blob != enrolled.blob:
            raise _wrong_site_key(key_path)

    # -- creation ------------------------------------------------------------------------
    @classmethod
    def init(
        cls,
        root: Path,
        kit: Path,
        site_id: str,
        key: Path,
        data: Path | None,
        data_format: str | None,
        hub_fingerprint: str,
    ) -> SiteWorkspace:
        """Check the kit against the confirmed hub fingerprint and the site key, then set up."""
        require_folder(
            root, "the site workspace", hint="choose a new or empty folder; 'site init' creates it"
        )
        require_folder(kit, "the site kit", KIT_FILE)
        if (root / SITE_FILE).exists():
            raise UsageError(
                "this folder is already a site workspace",
                path=root,
                code=Code.EXISTS,
                hint="use it as it is, or choose an empty folder",
            )
        kit_info = read_toml(kit / KIT_FILE, "site kit (made by 'flsilo hub kit')")
        if kit_info.get("site_id") != site_id:
            raise UsageError(
                f"this kit was made for site {kit_info.get('site_id')!r}, not {site_id!r}",
                path=kit,
                code=Code.KIT_SITE,
                hint="ask the hub for the kit made for your site id",
            )
        if not ID_PATTERN.match(site_id):
            raise UsageError(
                f"site id {site_id!r} is not valid", hint="use lower-case a-z, 0-9, - . _"
            )
        hub_pub = _check_kit_keys(kit, kit_info, key, hub_fingerprint)
        federation = fed.load(kit / fed.FEDERATION_FILE)
        config = SiteConfig(
            site_id=site_id,
            federation=federation.federation,
            key=stored_path(key, root),
            hub_fingerprint=hub_pub.fingerprint,
            site_key=str(kit_info["site_key"]),
            data=stored_path(data, root) if data else None,
            data_format=data_format,
        )
        root.mkdir(parents=True, exist_ok=True)
        copy_file(kit / fed.FEDERATION_FILE, root / fed.FEDERATION_FILE)
        copy_file(kit / "hub.pub", root / "hub.pub")
        ws = cls(root, config)
        for package in sorted(kit.glob("*.safetensors")):
            # verified and copied in one read, before anything is recorded
            with atomic_writer(ws.packages / package.name) as out:
                verified = ws.accept_package(package, copy_to=out)
            site_record.note_package(root, verified.manifest.round, package.name, verified.sha256)
            copy_file(sig_path(package), ws.packages / sig_path(package).name)
        ws.outbox.mkdir(exist_ok=True)
        write_text(root / SITE_FILE, fed.dump_toml(config.__dict__, "flsilo site workspace"))
        return ws

    @classmethod
    def open(cls, root: Path) -> SiteWorkspace:
        require_folder(root, "the site workspace", SITE_FILE)
        data = read_toml(root / SITE_FILE, "site workspace (made by 'flsilo site init')")
        try:
            config = SiteConfig(**data)
        except TypeError as exc:
            raise MalformedInputError(
                f"{SITE_FILE} is not valid ({exc})", path=root / SITE_FILE
            ) from exc
        return cls(root, config)

    # -- trust and rollback state ---------------------------------------------------------
    def confirmed_hub_key(self) -> PublicKey:
        """The hub key confirmed by phone at init (hub.pub), checked against its fingerprint."""
        hub = load_public_key(self.root / "hub.pub")
        if hub.fingerprint != self.config.hub_fingerprint:
            raise WorkspaceError(
                "hub.pub in the workspace no longer matches the fingerprint recorded at init",
                path=self.root / "hub.pub",
                code=Code.HUB_KEY_CHANGED,
                hint="someone replaced the hub key; restore it from the kit and investigate",
            )
        return hub

    def hub_key(self) -> PublicKey:
        """The hub key now trusted: the confirmed one, or where its rotation chain led."""
        followed = self.state().hub_key
        return parse_public_line(followed) if followed else self.confirmed_hub_key()

    def trust(self, key: PublicKey | None = None) -> AllowedSigners:
        hub = key or self.hub_key()
        entry = SignerEntry(principals=HUB_PRINCIPAL, key=hub, namespaces=PACKAGE_NAMESPACE)
        return AllowedSigners([entry], source=str(self.root / "hub.pub"))

    def hub_keys_held(self) -> list[PublicKey]:
        """Every hub key this site has trusted, oldest first: the confirmed one, each key a
        rotation chain led to. Packages already held were signed by one of them."""
        before = [parse_public_line(k) for k in self.state().hub_keys_before or ()]
        keys: list[PublicKey] = []
        for key in [self.confirmed_hub_key(), *before, self.hub_key()]:
            if all(key.blob != k.blob for k in keys):
                keys.append(key)
        return keys

    def state(self) -> SiteState:
        """The rollback state (``state.json``): last round trained, packages, hub keys."""
        return read_state(self.root)

    def record_round(self, round_: int, package_sha: str) -> None:
        write_state(self.root, self.state().trained(round_, package_sha))

    def accept_package(self, package: Path, *, copy_to: Any = None) -> Verified:
        """Verify a package for this site: hub signature, federation, no rollback, no fork.

        A package signed by another key than the trusted hub key is accepted only when the
        rotation statements it carries lead from the trusted key to its signer; the site
        then trusts the new key from on.
        """
        trusted = self.hub_key()
        key, passed = trusted, list[PublicKey]()
        try:
            verified = verify_file(
                package, self.trust(trusted), expected_kind=KIND_PACKAGE, copy_to=copy_to
            )
        except VerificationError as err:
            if err.code != Code.UNKNOWN_SIGNER:
                raise
            confirmed = trusted.blob == self.confirmed_hub_key().blob
            followed = self._follow_rotations(package, trusted)
            if followed is None:
                raise _foreign_hub(err, package, trusted, confirmed=confirmed) from err
            *passed, key = followed
            if copy_to is not None:  # the first attempt copied the file already
                copy_to.seek(0)
                copy_to.truncate()
            try:
                verified = verify_file(
                    package, self.trust(key), expected_kind=KIND_PACKAGE, copy_to=copy_to
                )
            except VerificationError as again:  # the chain led elsewhere than its signer
                raise _foreign_hub(again, package, trusted, confirmed=confirmed) from again
        m = verified.manifest
        if m.federation != self.config.federation:
            raise PolicyError(
                f"package is for federation {m.federation!r}, this site is in "
                f"{self.config.federation!r}",
                path=package,
                code=Code.WRONG_FEDERATION,
                hint="use the package your own hub sent",
            )
        state = self.state()
        if m.round < state.last_round:
            raise PolicyError(
                f"package is for round {m.round}, but this site already trained on round "
                f"{state.last_round}",
                path=package,
                code=Code.ROLLBACK,
                hint="an old package was sent back (replay or mix-up); ask the hub for the "
                "current one",
            )
        seen = state.package_for(m.round)
        if seen is not None and seen != verified.sha256:
            raise PolicyError(
                f"a different package for round {m.round} was already trained on here",
                path=package,
                code=Code.FORKED_ROUND,
                hint="two signed packages claim the same round; stop and call the hub",
            )
        if key.blob != trusted.blob:  # every key left is kept, in order
            left = [k.openssh_line() for k in (trusted, *passed)]
            write_state(self.root, state.followed(key.openssh_line(), left))
        return verified

    def _follow_rotations(self, package: Path, trusted: PublicKey) -> list[PublicKey] | None:
        """The newer hub keys that rotation statements lead through from ``trusted``, the
        newest last; None when they lead nowhere.

        Statements come from the package's manifest, else from ``PACKAGE.key-chain.json``
        beside a package the hub re-signed at a rotation. Trust moves only through a
        statement signed by the key already trusted (and the new key), and never back to a
        hub key this site trusted or passed through before (``hub_keys_before``).
        """
        info = scan_file(package).manifest.package
        chains = [info.key_chain] if info is not None and info.key_chain else []
        beside = chain_path(package)
        if beside.exists():
            chains.append(load_chain(read_bounded(beside, MAX_CHAIN_BYTES), source=str(beside)))
        retired = [k for k in self.hub_keys_held() if k.blob != trusted.blob]
        # the hub's history only grows, so the longer chain leads further: the manifest's
        # stops at the package's making, the file beside it was written at a later rotation
        for chain in sorted(chains, key=len, reverse=True):
            walked = walk_chain(
                trusted, chain, self.config.federation, source=str(package), retired=retired
            )
            if len(walked) > 1:
                return walked[1:]
        return None

    def clear_work(self, directory: Path) -> None:
        shutil.rmtree(directory, ignore_errors=True)


def _check_kit_keys(
    kit: Path, kit_info: dict[str, Any], key: Path, hub_fingerprint: str
) -> PublicKey:
    """The kit's hub key, if it is the confirmed one and the kit is for this site key."""
    hub_pub = load_public_key(kit / "hub.pub")
    if hub_pub.fingerprint != kit_info.get("hub_fingerprint") or not isinstance(
        kit_info.get("site_key"), str
    ):
        raise MalformedInputError(
            "hub.pub or the site key does not match what kit.toml records",
            path=kit / "hub.pub",
            code=Code.KIT_TAMPERED,
            hint="the kit was altered; get a fresh one and confirm the hub fingerprint by phone",
        )
    if not fingerprint_matches(hub_fingerprint, hub_pub.fingerprint):
        raise VerificationError(  # never print the kit's fingerprint: it must not be pasted
            "the kit's hub key is not the key whose fingerprint you confirmed",
            path=kit / "hub.pub",
            code=Code.HUB_FINGERPRINT_MISMATCH,
            hint="do not use this kit; call the hub administrator and compare the fingerprint "
            "again, character by character",
        )
    site_pub = load_public_key(key.with_name(key.name + ".pub"))
    if site_pub.blob != parse_public_line(str(kit_info["site_key"])).blob:
        raise _wrong_site_key(key)
    return hub_pub


def _wrong_site_key(key: Path) -> VerificationError:
    return VerificationError(
        "this site key is not the key the hub enrolled for this kit's site",
        path=key,
        code=Code.SITE_KEY_MISMATCH,
        hint="give --key the private key whose .pub you sent to the hub; a new key must be "
        "enrolled at the hub first",
    )


def _foreign_hub(
    err: VerificationError, package: Path, trusted: PublicKey, *, confirmed: bool
) -> VerificationError:
    """The site-side words for a package signed by a key that is not this site's hub."""
    if err.code != Code.UNKNOWN_SIGNER:
        return err
    since = "confirmed at site init" if confirmed else "trusted since a hub key rotation"
    chain = chain_path(package)
    if not chain.exists():  # after a hub key rotation: the statements left off the stick
        return VerificationError(
            f"{err.message}, and {chain.name} is not beside it",
            path=package,
            code=err.code,
            hint=f"if your hub rotated its key, copy {chain.name} (from the stick or the "
            "hub's packages/ folder) beside the package and run again; otherwise it was not "
            f"signed by your hub (key {trusted.fingerprint}, {since}): it may be another "
            "federation's or a mixed-up stick, so use the package your own hub sent",
        )
    return VerificationError(
        err.message,
        path=package,
        code=err.code,
        hint=f"this package was not signed by your hub (key {trusted.fingerprint}, {since}), "
        "and no key rotation statement signed by that key leads to its signer "
        f"(none in the package or in {chain_path(package).name}): it may be another "
        "federation's or a mixed-up stick; use the package your own hub sent, and call the hub "
        "administrator if it did send this one",
    )
