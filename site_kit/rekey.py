"""``flsilo site rekey``: switch a site workspace to the key the hub re-enrolled (hub rekey).

The new private key is unlocked once (so a key the site cannot use is refused now, not at
the next training run) and, when a kit made after the hub's rekey is given, checked
against the key that kit says the hub enrolled. The change is recorded in the site's
hash-chained record, then ``site.toml`` is replaced atomically.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from flsilo.fs.atomic import WorkspaceLock, write_text
from flsilo.fs.folders import require_folder
from flsilo.fs.workspace_paths import stored_path
from flsilo.plans import federation as fed
from flsilo.plans.federation import read_toml
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError, VerificationError
from flsilo.signing.keys import (
    PassphraseSource,
    PublicKey,
    load_private_key,
    load_public_key,
    parse_public_line,
)
from site_kit import record as site_record
from site_kit.workspace import KIT_FILE, SITE_FILE, SiteWorkspace


@dataclass(frozen=True)
class Rekeyed:
    """What ``site rekey`` changed: the old and new key fingerprints, and how it was checked."""

    site: str
    old_fingerprint: str
    new_fingerprint: str
    checked_against_kit: str | None


def rekey(
    root: Path, new_key: Path, passphrase: PassphraseSource, kit: Path | None = None
) -> Rekeyed:
    """Point the workspace at ``new_key``; refuse it unless it is usable (and, with ``kit``,
    the key the hub enrolled for this site)."""
    ws = SiteWorkspace.open(root)
    with WorkspaceLock(root, "site workspace"):
        ws = SiteWorkspace.open(root)  # read again under the lock
        old = parse_public_line(ws.config.site_key)
        new_pub = load_public_key(new_key.with_name(new_key.name + ".pub"))
        if new_pub.blob == old.blob:
            raise UsageError(
                "this is already the site's key",
                path=new_key,
                code=Code.SAME_KEY,
                hint="give the new key the hub enrolled with 'flsilo hub rekey'",
            )
        private = load_private_key(new_key, passphrase)
        if PublicKey.from_key(private.public_key()).blob != new_pub.blob:
            raise VerificationError(
                "the private key is not the one its .pub beside it names",
                path=new_key,
                code=Code.SITE_KEY_MISMATCH,
                hint="keep each key with its own .pub; the .pub is what the hub enrolled",
            )
        if kit is not None:
            _check_kit(ws, kit, new_pub)
        done = Rekeyed(
            ws.config.site_id,
            old.fingerprint,
            new_pub.fingerprint,
            str(kit) if kit is not None else None,
        )
        _record_once(root, done, ws.config.site_key)
        config = replace(ws.config, key=stored_path(new_key, root), site_key=new_pub.openssh_line())
        write_text(root / SITE_FILE, fed.dump_toml(config.__dict__, "flsilo site workspace"))
    return done


def _check_kit(ws: SiteWorkspace, kit: Path, new_pub: PublicKey) -> None:
    """A kit made after the rekey names the key the hub now enrols for this site."""
    require_folder(kit, "the site kit", KIT_FILE)
    info = read_toml(kit / KIT_FILE, "site kit (made by 'flsilo hub kit')")
    if info.get("site_id") != ws.config.site_id or info.get("federation") != ws.config.federation:
        raise UsageError(
            f"this kit was made for site {info.get('site_id')!r} of federation "
            f"{info.get('federation')!r}, not for {ws.config.site_id!r} of "
            f"{ws.config.federation!r}",
            path=kit,
            code=Code.KIT_SITE,
            hint="ask the hub for a kit made for your site after 'flsilo hub rekey'",
        )
    if load_public_key(kit / "hub.pub").blob != ws.hub_key().blob:
        raise VerificationError(
            "the kit's hub key is not the hub key this site trusts",
            path=kit / "hub.pub",
            code=Code.HUB_FINGERPRINT_MISMATCH,
            hint="do not use this kit; call the hub administrator",
        )
    enrolled = parse_public_line(str(info.get("site_key", "")))
    if enrolled.blob != new_pub.blob:
        raise VerificationError(
            f"the hub enrolled {enrolled.fingerprint} for this site, not this key "
            f"({new_pub.fingerprint})",
            path=kit / KIT_FILE,
            code=Code.SITE_KEY_MISMATCH,
            hint="read the new key's fingerprint to the hub administrator, who runs "
            "'flsilo hub rekey' and makes a new kit; until then keep the old key",
        )


def _record_once(root: Path, done: Rekeyed, old_line: str) -> None:
    """Append a ``rekey`` event, unless a crash left this very change recorded already."""
    last = [e.body for e in site_record.events(root)[-1:]]
    if (
        last
        and isinstance(last[0], site_record.Rekeyed)
        and last[0].new_key == done.new_fingerprint
    ):
        return
    site_record.record(
        root,
        site_record.Rekeyed(
            old_key=done.old_fingerprint,
            old_site_key=old_line,  # site status still recognises bundles it signed
            new_key=done.new_fingerprint,
            checked_against_kit=done.checked_against_kit,
        ),
    )
