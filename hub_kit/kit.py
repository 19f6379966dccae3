"""``flsilo hub kit``: everything one site needs to join, in one folder to carry in."""

from __future__ import annotations

import shlex
from pathlib import Path

from flsilo.format.artifact import sig_path
from flsilo.fs.atomic import atomic_directory, copy_file, write_text
from flsilo.fs.folders import require_folder
from flsilo.plans import federation as fed
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError
from flsilo.signing import oms
from flsilo.signing.rotation import dump_chain
from hub_kit import wheelhouse as wh
from hub_kit.privacy import privacy_note
from hub_kit.workspace import HubWorkspace

README = """\
flsilo site kit for site "{site}": federation "{federation}", round {round}

This kit is made for the site key the hub enrolled for "{site}": the key whose
fingerprint you read to the hub administrator. Its private half never leaves your site.

1. Ask the hub administrator to read you the hub key's fingerprint by phone. Do not take
   it from anything that came with this kit: whoever could change the kit could change
   a fingerprint written in it.
2. Set up the site workspace (replace the words in capitals; KIT_DIR is this folder):
     flsilo site init SITE_DIR --kit KIT_DIR --site-id {site} --key YOUR_SITE_KEY \\
         --hub-fingerprint SHA256:THE-FINGERPRINT-READ-TO-YOU --data YOUR_DATA
   YOUR_SITE_KEY is the private key whose .pub you sent to the hub (the .pub sits beside
   it). site init refuses a kit whose hub key is not the one you confirmed, and a site
   key other than the enrolled one.
3. Train on the package:
     flsilo train SITE_DIR/packages/{package} --site SITE_DIR
   A stopped run resumes when you run the same command again.
4. Carry both files from SITE_DIR/outbox/ (the .safetensors and its .sig) to the hub.
{privacy}
Files here: federation.toml (what the federation agreed), hub.pub (the hub's public key),
{package} and its .sig (the model to train), kit.toml (what this kit is for).
"""


def make_kit(ws: HubWorkspace, site: str, out: Path, *, wheelhouse: Path | None = None) -> Path:
    """Write the kit for ``site``; with ``wheelhouse``, a copy verified against the hub key."""
    state = ws.state()
    if site not in state.active_sites():
        raise UsageError(
            f"site {site!r} is not enrolled",
            code=Code.NOT_ENROLLED,
            hint=f"enrol it first: flsilo hub enroll {shlex.quote(str(ws.root))} {site} SITE.pub --fingerprint ...",
        )
    require_folder(out, "the kit", hint="choose a new or empty folder; 'hub kit' creates it")
    if out.exists() and any(out.iterdir()):
        raise UsageError(
            "kit folder exists and is not empty",
            path=out,
            code=Code.EXISTS,
            hint="choose a new or empty folder",
        )
    package = ws.current_package(state)
    (enrolled,) = [e for e in state.enrolments if e.site == site and e.revoked_at is None]
    assert state.hub_key is not None
    fingerprint = state.hub_key.fingerprint  # from the event log, not from a file that could drift
    if wheelhouse is not None:
        assert state.hub_key is not None
        wh.verify(wheelhouse, state.hub_key)  # never ship a wheelhouse the sites would refuse
    with atomic_directory(out) as staging:
        if wheelhouse is not None:
            (staging / "wheelhouse").mkdir()
            for item in sorted(wheelhouse.iterdir()):
                copy_file(item, staging / "wheelhouse" / item.name)
        copy_file(ws.root / fed.FEDERATION_FILE, staging / fed.FEDERATION_FILE)
        write_text(staging / "hub.pub", state.hub_key.openssh_line() + "\n")
        copy_file(package, staging / package.name)
        copy_file(sig_path(package), staging / sig_path(package).name)
        if oms.bundle_path(package).exists():
            copy_file(oms.bundle_path(package), staging / oms.bundle_path(package).name)
        kit_info = {
            "site_id": site,
            "federation": ws.config.federation,
            "hub_fingerprint": fingerprint,
            "site_key": enrolled.key.openssh_line(),
            "package": package.name,
            "round": state.round,
        }
        write_text(staging / "kit.toml", fed.dump_toml(kit_info, "flsilo site kit"))
        if state.rotations:  # the hub key's history, for the record (statements in flsilo-root)
            write_text(staging / "key-chain.json", dump_chain(state.rotations))
        write_text(
            staging / "README.txt",
            README.format(
                site=site,
                federation=ws.config.federation,
                round=state.round,
                package=package.name,
                privacy=privacy_note(ws.config),
            ),
        )
    return out
