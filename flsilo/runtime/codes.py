"""The registry of every error code flsilo produces: its exit status, a summary and a hint.

Each code is a member of :class:`Code`, a string enum, so the codes written into the event
log, signed provenance and ``--json`` reports are exactly these strings. The reference page
``docs/reference/error-codes.md`` is generated from this table (``python -m flsilo.runtime.codes``)
and a test keeps the two equal; another test fails when a code is never produced by a test.
"""

from __future__ import annotations

import sys
from enum import IntEnum, StrEnum


class ExitCode(IntEnum):
    """Exit statuses of the ``flsilo`` command, documented in docs/reference/exit-codes.md."""

    OK = 0
    ERROR = 1
    USAGE = 2
    VERIFICATION_FAILED = 3
    MALFORMED_INPUT = 4
    INTERRUPTED = 130
    TERMINATED = 143


E, U, V, M = ExitCode.ERROR, ExitCode.USAGE, ExitCode.VERIFICATION_FAILED, ExitCode.MALFORMED_INPUT

DEFAULT_HINTS = {
    ExitCode.ERROR: "rerun with --verbose for details; see docs/reference/error-codes.md",
    ExitCode.USAGE: "see the command's --help for its arguments and an example",
    ExitCode.VERIFICATION_FAILED: "do not use this file; get a fresh, signed copy from its signer",
    ExitCode.MALFORMED_INPUT: "the file is damaged or not what it claims to be; get a fresh copy",
    ExitCode.INTERRUPTED: "rerun the same command to resume",
    ExitCode.TERMINATED: "rerun the same command to resume",
}


class Code(StrEnum):
    """One member per error code: ``Code.X == "x"``, with ``.exit``, ``.summary`` and ``.hint``."""

    exit: ExitCode
    summary: str
    own_hint: str

    def __new__(cls, value: str, exit: ExitCode, summary: str, hint: str = "") -> Code:
        member = str.__new__(cls, value)
        member._value_ = value
        member.exit = exit
        member.summary = summary
        member.own_hint = hint
        return member

    @property
    def hint(self) -> str:
        """What to do: the code's own hint, or the one of its exit status."""
        return self.own_hint or DEFAULT_HINTS[self.exit]

    # -- generic codes of each error class -------------------------------------------------
    ERROR = "error", E, "an operation could not be completed"
    USAGE = "usage", U, "the command was called wrongly"
    VERIFICATION_FAILED = "verification-failed", V, "a file failed a trust check"
    MALFORMED = "malformed", M, "a file is not what it claims to be"
    POLICY = "policy", V, "a verified file is refused by hub or site policy"
    WORKSPACE = "workspace", E, "a hub or site workspace is missing, inconsistent or unwritable"
    KEY = "key", E, "a key file cannot be used"
    BAD_DATA = "bad-data", M, "training or evaluation data does not match the federation"
    OS = (
        "os",
        E,
        "the operating system refused a read or write (missing file, permissions, disk full)",
        "check the path, free disk space and permissions",
    )
    INTERRUPTED = (
        "interrupted",
        ExitCode.INTERRUPTED,
        "Ctrl-C stopped the command (SIGTERM exits 143, SIGHUP 129); nothing half-written was kept",
    )

    # -- safetensors structure ---------------------------------------------------------------
    TRUNCATED = "truncated", M, "the file ends before its header or tensors do"
    BAD_LENGTH = "bad-length", M, "the file's length differs from what its header describes"
    HEADER_TOO_LARGE = (
        "header-too-large",
        M,
        "the header claims more bytes than any flsilo file has",
    )
    BAD_STRUCTURE = "bad-structure", M, "the safetensors header is not valid"
    BAD_OFFSETS = "bad-offsets", M, "tensors overlap, leave gaps, or end before they begin"
    BAD_SIZE = "bad-size", M, "a tensor's byte size does not match its dtype and shape"
    BAD_NAME = "bad-name", M, "a tensor name is empty, contains NUL, or is not valid Unicode"
    BAD_DTYPE = "bad-dtype", M, "a tensor has a dtype flsilo does not accept"
    NON_FINITE = "non-finite", M, "a tensor holds NaN or infinite values"
    MISSING = "missing", M, "the file does not exist", "check the path"

    # -- manifest -----------------------------------------------------------------------------
    NO_MANIFEST = "no-manifest", M, "the file has no flsilo manifest in its metadata"
    EXTRA_METADATA = "extra-metadata", M, "the metadata has keys besides the flsilo manifest"
    BAD_MANIFEST = "bad-manifest", M, "the manifest does not follow its schema"
    MANIFEST_VERSION = (
        "manifest-version",
        M,
        "the manifest's format version is not one this flsilo reads (version 3 reads 2 and 3)",
        "a newer version: upgrade flsilo to the release that wrote the file (its manifest "
        "names it under `software`); an older one: regenerate the file with this release",
    )

    # -- signatures and trust -----------------------------------------------------------------
    MISSING_SIGNATURE = (
        "missing-signature",
        V,
        "the file's detached signature FILE.sig is missing or unreadable",
        "carry FILE.sig together with FILE",
    )
    SIGNATURE_MALFORMED = "signature-malformed", M, "FILE.sig is not a valid SSHSIG signature"
    BAD_SIGNATURE = "bad-signature", V, "the signature does not match the file's bytes"
    WRONG_NAMESPACE = "wrong-namespace", V, "the signature was made for another kind of file"
    UNKNOWN_SIGNER = "unknown-signer", V, "the signing key is not in the trusted signers"
    PRINCIPAL_MISMATCH = "principal-mismatch", V, "the signer is not the site the file names"
    NAMESPACE_NOT_ALLOWED = (
        "namespace-not-allowed",
        V,
        "the signer's key is not allowed to sign this kind of file",
    )
    KEY_REVOKED = "key-revoked", V, "the signing key was revoked before this file was accepted"
    KEY_NOT_YET_VALID = "key-not-yet-valid", V, "the signing key was not yet valid at that time"
    SIGNERS_MALFORMED = "signers-malformed", M, "the allowed_signers file cannot be parsed"
    SIGNERS_MISSING = "signers-missing", M, "the allowed_signers file does not exist"
    SIGNERS_EDITED = (
        "signers-edited",
        V,
        "the hub's allowed_signers differs from what its event log says",
        "regenerate it with any 'flsilo hub' command, or restore the workspace from backup",
    )
    AUDIT_TRUST_ROOT = (
        "audit-trust-root",
        U,
        "`audit` needs the hub key confirmed outside the workspace: exactly one of "
        "--hub-fingerprint SHA256:... or --hub-key PUBKEY",
        "the hub administrator reads the fingerprint over the phone ('flsilo keys fingerprint "
        "hub.pub' on the hub's own machine, printed at 'hub init'); never copy it from the "
        "workspace being audited",
    )
    TRUST_REQUIRED = (
        "trust-required",
        U,
        "verification needs trust: a signers file or a public key",
        "pass --signers ALLOWED_SIGNERS or --key PUBKEY",
    )
    WRONG_KIND = "wrong-kind", V, "a bundle was given where a package is expected, or the reverse"

    # -- keys and passphrases -----------------------------------------------------------------
    KEY_MISSING = "key-missing", E, "the key file does not exist"
    KEY_MALFORMED = "key-malformed", E, "the key file is not a valid OpenSSH key"
    KEY_TYPE = "key-type", E, "the key is of a type flsilo does not use"
    KEY_IS_PRIVATE = "key-is-private", E, "a private key was given where a public key belongs"
    BAD_KEY_TYPE = "bad-key-type", U, "--type names a key type flsilo does not make"
    KEY_EXISTS = "key-exists", U, "refusing to overwrite an existing key file"
    KEY_PASSPHRASE = "key-passphrase", E, "the passphrase does not unlock the key"
    PASSPHRASE_FILE = "passphrase-file", E, "the passphrase file cannot be read"
    PASSPHRASE_REQUIRED = (
        "passphrase-required",
        U,
        "a passphrase is needed and there is no terminal to ask on",
        "use --passphrase-file F or FLSILO_PASSPHRASE",
    )
    FINGERPRINT_MISMATCH = (
        "fingerprint-mismatch",
        V,
        "the key's fingerprint differs from the one confirmed out of band",
        "confirm the fingerprint with its owner again, over a trusted channel",
    )

    # -- federation and workspaces ------------------------------------------------------------
    NO_FEDERATION = "no-federation", M, "federation.toml is missing"
    BAD_FEDERATION = "bad-federation", M, "federation.toml cannot be read or breaks its schema"
    NOT_A_WORKSPACE = "not-a-workspace", E, "the folder is not a flsilo workspace"
    LOCKED = (
        "locked",
        E,
        "another flsilo command holds the workspace",
        "wait for it to finish, then rerun",
    )
    LOG_BROKEN = (
        "log-broken",
        V,
        "the hub's event log was edited or damaged outside flsilo",
        "restore the workspace from backup and run 'flsilo audit'",
    )
    LOG_VERSION = (
        "log-version",
        M,
        "the hub's event log holds an event kind or field this flsilo does not know (a newer flsilo wrote it)",
        "upgrade flsilo to the release that wrote the log",
    )
    LOG_MISSING = "log-missing", E, "the hub's event log is missing"
    STATE = "state", E, "the site's state file cannot be read"
    EXISTS = "exists", U, "refusing to overwrite something that exists"
    BAD_SCHEDULE = "bad-schedule", U, "the schedule or local epochs are not valid"
    BAD_STRATEGY = (
        "bad-strategy",
        U,
        "the aggregation strategy is not known or its parameter is off",
    )
    BAD_MODEL_SPEC = "bad-model-spec", U, "the model spec names no usable model"
    UNKNOWN_TASK = (
        "unknown-task",
        E,
        "the plan's task is neither built into this flsilo nor an importable plug-in",
        "upgrade flsilo, or install the plug-in that provides the task",
    )
    BAD_PARTITION = "bad-partition", U, "the simulation's partition scheme is not valid"
    BAD_SITE_ID = "bad-site-id", U, "a site id must be a short name of letters, digits, '-' and '_'"
    INIT_WEIGHTS = "init-weights", U, "the initial weights do not fit the model"
    DEMO_DATA = "demo-data", U, "the bundled demo data set is not installed"

    # -- hub ----------------------------------------------------------------------------------
    ALREADY_ENROLLED = "already-enrolled", U, "the site or key is already enrolled"
    NOT_ENROLLED = "not-enrolled", U, "the site is not enrolled at this hub"
    NO_INBOX = "no-inbox", U, "the inbox folder does not exist"
    NOT_ENOUGH_SITES = (
        "not-enough-sites",
        E,
        "fewer bundles verified than the round needs",
        "wait for more bundles, or lower --min-sites for this round",
    )
    FEDERATION_COMPLETE = "federation-complete", U, "the final round is already aggregated"
    PACKAGE_CHANGED = "package-changed", V, "a package in the hub workspace changed after issue"
    TEST_SET_CHANGED = (
        "test-set-changed",
        E,
        "the hub's test set (`aggregate --eval`) changed between its check before the round "
        "and its scoring: the claim would name other records than those scored; nothing was "
        "written",
        "leave the test set alone while 'flsilo aggregate --eval' runs, then run it again",
    )
    CONFLICTING_DUPLICATE = (
        "conflicting-duplicate",
        V,
        "one site sent two different bundles for one round",
    )
    WRONG_FEDERATION = "wrong-federation", V, "the file belongs to another federation"

    # -- site ---------------------------------------------------------------------------------
    KIT_SITE = "kit-site", U, "the kit was made for another site"
    KIT_TAMPERED = "kit-tampered", M, "a file in the site kit does not match its signed package"
    HUB_KEY_CHANGED = "hub-key-changed", E, "the hub key in the site workspace has changed"
    ROLLBACK = "rollback", V, "the package is older than one this site already trained on"
    FORKED_ROUND = "forked-round", V, "the hub issued two different packages for one round"
    FINAL_PACKAGE = "final-package", V, "the package is the federation's final model"
    ALREADY_TRAINED = "already-trained", U, "this site already wrote its bundle for this round"
    MODEL_CODE_MISMATCH = (
        "model-code-mismatch",
        V,
        "this site's model code differs from the code the package was built with",
        "install the flsilo version (or plug-in) the hub uses",
    )
    WEIGHTS_MISMATCH = "weights-mismatch", M, "the file's tensors do not fit the model"
    BAD_CHECKPOINT = (
        "bad-checkpoint",
        M,
        "a published checkpoint is neither safetensors nor a weights-only PyTorch state dict",
        "download the publisher's .safetensors file, or save the state dict with its own library",
    )
    NO_GPU = "no-gpu", U, "a GPU was requested and none is available"

    # -- data ---------------------------------------------------------------------------------
    DATA_FORMAT = "data-format", U, "the data format is not one flsilo reads"
    DATA_MISSING = "data-missing", M, "the data path does not exist or is not a folder"
    EMPTY_DATA = "empty-data", M, "no usable samples were found"
    BAD_RECORD = "bad-record", M, "a sample cannot be read"
    SHAPE = "shape", M, "samples do not have the federation's input shape"
    CSV_HEADER = "csv-header", M, "the CSV file has no header row"
    CSV_MISSING_COLUMN = "csv-missing-column", M, "a column the federation needs is missing"
    CSV_SYNTAX = "csv-syntax", M, "a CSV row cannot be parsed"
    NPZ_ARRAYS = "npz-arrays", M, "the .npz file lacks its x or y array"
    NPZ_READ = "npz-read", M, "the .npz file cannot be read"
    NPZ_DTYPE = "npz-dtype", M, "the .npz features are not numeric"
    DICOM_EXTRA = (
        "dicom-extra",
        U,
        "`--data-format dicom` needs pydicom: install the `dicom` extra",
        "pip install 'flsilo[dicom]' (or its wheel from the wheelhouse)",
    )
    VIDEO_EXTRA = (
        "video-extra",
        U,
        "`--data-format video` needs PyAV: install the `video` extra",
        "pip install 'flsilo[video]' (or its wheel from the wheelhouse)",
    )
    VIDEO_SAMPLING = (
        "video-sampling",
        U,
        "video data in a federation whose plan sets no frame sampling (`--frame-rate` or `--frames-per-clip`)",
        "ask the hub administrator for a plan with --frame-rate FPS or --frames-per-clip N",
    )

    # -- intake policy (reasons recorded in quarantine, the log and package provenance) --------
    FUTURE_ROUND = (
        "future-round",
        V,
        "a bundle claims a round the hub has not reached",
        "no package for that round was ever issued; treat the file as forged",
    )
    STALE = "stale", V, "a late bundle: trained on an older round's package"
    WRONG_BASE = "wrong-base", V, "a bundle was trained on a package this hub did not issue"
    WRONG_MODEL = "wrong-model", V, "a bundle's model description differs from the package's"
    WRONG_TENSORS = (
        "wrong-tensors",
        V,
        "a bundle's tensor names, dtypes, shapes or layout differ from what the round asks for",
    )
    SAMPLE_COUNT = "sample-count", V, "a bundle's sample count is zero or above the hub's cap"
    RELEASE_MISSING = "release-missing", V, "a release officer's signature file is missing"

    # -- wave 2 -------------------------------------------------------------------------------
    BAD_WEIGHT_SHARE = (
        "bad-weight-share",
        U,
        "`--max-weight-share` is not in (0, 1], or is below 1/K for the K accepted bundles",
    )
    BAD_NORM_GATE = (
        "bad-norm-gate",
        U,
        "`--norm-gate` is not a positive number",
    )
    NORM_GATE = (
        "norm-gate",
        V,
        "an update's norm exceeded the norm gate; quarantined with a reason file, the round goes on",
    )
    BAD_COSINE_GATE = (
        "bad-cosine-gate",
        U,
        "`--cosine-gate` is not a cosine in (-1, 1)",
    )
    COSINE_GATE = (
        "cosine-gate",
        V,
        "an update's cosine to the round's coordinate-wise median update was below the cosine "
        "gate; quarantined with a reason file, the round goes on",
    )
    BAD_SERVER_OPTIMIZER = (
        "bad-server-optimizer",
        U,
        "`--server-optimizer` is not none, fedavgm, fedadam or fedyogi, or a setting is out of range (lr > 0, 0 <= momentum, betas < 1, tau > 0)",
    )
    BAD_SERVER_STATE = (
        "bad-server-state",
        V,
        "the server optimizer's state file under `state/` is missing, altered (sha256 differs from the package provenance) or not a state file",
    )
    WRONG_FISHER = (
        "wrong-fisher",
        V,
        "(a bundle's reject reason) the round merges by Fisher and the bundle lacks its declared `fisher.NAME` tensors, carries others, or declares none",
    )
    BAD_MERGE = (
        "bad-merge",
        U,
        "`--merge` names something other than `fisher`",
    )
    BAD_CONFIG = (
        "bad-config",
        U,
        "a federation setting breaks a rule (`hub init`, `simulate`, `demo` options: lr > 0, at least two classes, `--min-sites` ≥ 1, ...); nothing is created",
    )
    LOG_CHANGED = (
        "log-changed",
        U,
        "the hub's event log changed while the command waited for the passphrase",
        "run the command again",
    )
    FEDERATION_VERSION = (
        "federation-version",
        M,
        "`federation.toml` has a format version this flsilo does not read (it reads 2 and 3; a file without `format_version` is version 1); a newer one: upgrade flsilo; an older one: make the federation again with this release",
    )
    DP_PLAN = (
        "dp-plan",
        U,
        "`hub init` of a DP federation with a closed-form or `stats+` schedule (sites would ship un-noised statistics), or training asked for DP without a prepared privacy round; an unusable DP plan itself (no budget, both or neither of sigma and epsilon per round, delta outside (0, 1), FedProx, Fisher merging, a statistics round) is `bad-config`",
    )
    DP_BATCHNORM = (
        "dp-batchnorm",
        U,
        "`hub init` of a DP federation with a model that has BatchNorm (use GroupNorm)",
    )
    DP_MODEL = (
        "dp-model",
        U,
        "DP-SGD cannot train the model: Opacus has no per-sample gradients for one of its layers (site side), or its loss is not per sample (`hub init`: a torchvision detector)",
    )
    DP_DISTRIBUTED = (
        "dp-distributed",
        U,
        "`train` of a DP round under torchrun (DP-SGD runs in one process per site)",
    )
    DP_NEEDS_OPACUS = (
        "dp-needs-opacus",
        U,
        "a site trains a DP round without the `dp` extra installed (`pip install 'flsilo[dp]'`)",
    )
    DP_BUDGET_EXCEEDED = (
        "dp-budget-exceeded",
        V,
        "a site refuses a round that would take its composed epsilon past the federation's budget (nothing is written); the hub refuses a bundle that reports spending past it",
    )
    DP_MECHANISM = (
        "dp-mechanism",
        V,
        "the hub refuses a bundle whose declared DP mechanism (or its absence) differs from the package's DP plan, or whose reported sampling rate and steps do not follow from its plan and sample count",
    )
    BAD_PRIVACY_LEDGER = (
        "bad-privacy-ledger",
        M,
        "the site's `privacy.json` cannot be read; it is never reset silently, restore it from backup",
    )
    PRIVACY_LEDGER_RESET = (
        "privacy-ledger-reset",
        V,
        "a site refuses to train when its `privacy.json` holds fewer rounds or less spending than its own hash-chained record (`record.jsonl`) shows: it was deleted, edited or replaced by an older copy",
        "restore `privacy.json` from the backup taken after the last round the record shows; never delete or edit it",
    )
    DP_SPENDING_WENT_BACK = (
        "dp-spending-went-back",
        V,
        "the hub refuses a DP bundle that reports fewer rounds or a smaller total epsilon than the same site (by id, across rekeys) reported in bundles it accepted for earlier rounds: the site's privacy ledger was reset",
        "do not use this bundle; ask the site to restore its `privacy.json` from backup (its own training refuses a ledger that falls short of its record)",
    )
    HUB_FINGERPRINT_MISMATCH = (
        "hub-fingerprint-mismatch",
        V,
        "`site init`: the kit's hub key is not the one whose fingerprint was confirmed by phone (the kit's fingerprint is never printed)",
    )
    SITE_KEY_MISMATCH = (
        "site-key-mismatch",
        V,
        "`site init` / `train`: the site key is not the key the hub enrolled for this kit",
    )
    CHECKPOINT_DAMAGED = (
        "checkpoint-damaged",
        E,
        "`train`: the round's training checkpoint cannot be read; delete the work folder named to start the round's training over",
    )
    NO_SUCH_FILE = (
        "no-such-file",
        U,
        "the path given for a package or bundle does not exist; the hint lists the `.safetensors` files beside it",
    )
    NOT_A_FILE = (
        "not-a-file",
        U,
        "a folder was given where a package or bundle file was expected",
    )
    NOT_A_FOLDER = (
        "not-a-folder",
        U,
        "a file was given where a folder was expected: a site or hub workspace, a site kit, an inbox, a wheelhouse, an output folder",
    )
    ABORTED = (
        "aborted",
        E,
        "input ended at a prompt (no terminal)",
        "give the passphrase with --passphrase-file, or run it again at a terminal",
    )
    PLOT_EXTRA = (
        "plot-extra",
        U,
        "`--png` needs matplotlib: install the `plot` extra",
    )
    PIP_FAILED = (
        "pip-failed",
        E,
        "`wheelhouse build`: pip could not collect or resolve the wheels (no index reachable, no build for the target)",
    )
    WHEELHOUSE_CUDA_TORCH = (
        "wheelhouse-cuda-torch",
        U,
        "`wheelhouse build --target cpu` resolved the CUDA build of torch; pass `--index-url https://download.pytorch.org/whl/cpu` or `--find-links` with a `+cpu` wheel",
    )
    WHEELHOUSE_SOURCE = (
        "wheelhouse-source",
        U,
        "`wheelhouse build` does not run from a flsilo checkout; pass `--source DIR`",
    )
    TORCH_VERSION = (
        "torch-version",
        U,
        "`wheelhouse build` cannot tell which torch version to collect",
    )
    WHEELHOUSE_MISSING = (
        "wheelhouse-missing",
        U,
        "the folder has no `SHA256SUMS`: not a wheelhouse",
    )
    WHEELHOUSE_TAMPERED = (
        "wheelhouse-tampered",
        V,
        "a wheelhouse file is missing, changed, or not listed in `SHA256SUMS`; do not install from it",
    )
    WHEELHOUSE_FILE = (
        "wheelhouse-file",
        M,
        "a file in the wheelhouse does not have a wheel's name",
    )
    RECORD_BROKEN = (
        "record-broken",
        V,
        "a line of the site's `record.jsonl` was changed or removed",
    )
    RECORD_VERSION = (
        "record-version",
        M,
        "the site's `record.jsonl` holds an event kind or field this flsilo does not know (a newer flsilo wrote it)",
        "upgrade flsilo to the release that wrote the record",
    )
    BAD_FREEZE = (
        "bad-freeze",
        U,
        "a `--freeze` glob matches no tensor of the model, or leaves nothing to train; nothing is created",
    )
    BAD_ADAPTERS = (
        "bad-adapters",
        U,
        "`--adapters` is not lora:r=R[,alpha=A,targets=GLOBS] with a whole r > 0, or a target glob matches no linear or convolution layer; nothing is created",
        "e.g. --adapters lora:r=8 (every linear and 1x1 convolution layer but the head)",
    )
    ADAPTERS_UNSUPPORTED = (
        "adapters-unsupported",
        V,
        "the package's adapters cannot be applied by this flsilo (an unknown kind, or a target its model lacks); nothing was trained",
        "install the flsilo version the hub uses, then rerun",
    )
    NO_HEAD = (
        "no-head",
        U,
        "a closed-form schedule for a model without a linear head with weight and bias",
    )
    CELL_TOO_SMALL = (
        "cell-too-small",
        V,
        "a statistics round would reveal a class (a stats round: a site) with fewer samples than the plan's `min_cell_size` (the site refuses; the hub rejects such a bundle)",
    )
    BAD_STATISTICS = (
        "bad-statistics",
        V,
        "a statistics bundle's class counts (a stats bundle's value counts) are not whole or do not add up to its sample count",
    )
    SUMS_MALFORMED = (
        "sums-malformed",
        M,
        "a round archive's `SHA256SUMS` has a line that is not `SHA256  NAME` (audit reports it)",
    )
    OMS_MALFORMED = (
        "oms-malformed",
        M,
        "`PACKAGE.sigstore.json` is not an OpenSSF model signing bundle flsilo can read",
    )
    OMS_KEY_TYPE = (
        "oms-key-type",
        V,
        "a model signing bundle sits beside a package signed by a non-P-256 key",
    )
    OMS_BAD_SIGNATURE = (
        "oms-bad-signature",
        V,
        "`PACKAGE.sigstore.json` is not signed by the package's signer",
    )
    OMS_MISMATCH = (
        "oms-mismatch",
        V,
        "`PACKAGE.sigstore.json` states another file name or digest (mix-and-match)",
    )
    RELEASE_NOT_SIGNED = (
        "release-not-signed",
        V,
        "`verify --require-release M`: fewer than M (or the package's own m) officers' signatures verify",
    )
    NO_RELEASE_POLICY = (
        "no-release-policy",
        V,
        "release sign-off asked of a package that is not a final package with a release policy",
    )
    NOT_AN_OFFICER = (
        "not-an-officer",
        U,
        "`release sign` with an id or key the package does not name as a release officer",
    )
    RELEASE_OFFICERS_MISSING = (
        "release-officers-missing",
        U,
        "`aggregate` would write the final package, but fewer officers are enrolled than `--release-signers`",
    )
    BAD_ROLE = (
        "bad-role",
        U,
        "`hub enroll --role` is neither `site` nor `release`",
    )
    PACKAGE_EXPIRED = (
        "package-expired",
        V,
        "`train` on a package past its `expires_at`; rerun with `--accept-expired` to override (recorded in the bundle)",
    )
    LOG_UNSIGNED = (
        "log-unsigned",
        V,
        "`events.jsonl.sig` is missing: the hub log cannot be trusted (every hub command and `audit`)",
    )
    LOG_SIGNATURE = (
        "log-signature",
        V,
        "the event log is signed by a key other than the hub key",
    )
    WRONG_HUB_KEY = (
        "wrong-hub-key",
        U,
        "a hub command was given a private key other than the hub's",
    )
    ROTATION_BROKEN = (
        "rotation-broken",
        V,
        "a package's hub key rotation statements are not signed by the keys they name, or are for another federation",
    )
    SAME_KEY = (
        "same-key",
        U,
        "`hub rotate-key` or `site rekey` was given the key already in use (or, for the hub, "
        "one it used before)",
    )
    EMPTY_INBOX = (
        "empty-inbox",
        U,
        "`aggregate --dry-run` / `hub status --inbox`: the folder holds no bundle",
    )
    TOO_DEEP = (
        "too-deep",
        M,
        "a safetensors header or manifest nests arrays/objects deeper than 32 levels",
    )
    NOT_REGULAR_FILE = (
        "not-regular-file",
        M,
        "a symlink, FIFO, device or folder where a file was expected; it was not read",
    )
    TOO_LARGE = (
        "too-large",
        M,
        "a file's size (from `fstat`) is more than such a file can hold; it was not read",
    )
    TOO_SMALL = (
        "too-small",
        M,
        "a file's size (from `fstat`) is less than such a file must hold; it was not read",
    )
    SIGNATURE_TOO_LARGE = (
        "signature-too-large",
        M,
        "a `.sig` over 16 KiB; it was not read",
    )
    IMPLAUSIBLE_SIZE = (
        "implausible-size",
        M,
        "an inbox bundle whose size cannot be a bundle for this round; it was not read",
    )
    NAME_TOO_LONG = (
        "name-too-long",
        M,
        "an inbox file's name is longer than flsilo keeps names (200 bytes); it was not read "
        "and is quarantined under a shortened name",
    )
    UNREADABLE = (
        "unreadable",
        M,
        "a file exists but cannot be opened or read (permissions, I/O error)",
    )
    SIGNATURE_DAMAGED = (
        "signature-damaged",
        V,
        "a reject whose bytes equal a bundle accepted in the same round: only its `.sig` was bad",
    )
    DISK_FULL = (
        "disk-full",
        E,
        "the disk filled up while a file was written; the message names the file, nothing was changed",
    )
    WORKER_DIED = (
        "worker-died",
        E,
        "a data-loading worker process died mid-run (the out-of-memory killer, or a signal sent to it alone); finished epochs are kept",
        "rerun the same command to resume; if it happens again, the machine is short of memory: give fewer --workers (0 decodes in the main process)",
    )
    INBOX_SYMLINK = (
        "inbox-symlink",
        E,
        "`HUB/inbox` is a symbolic link (pass a stick's folder with `--inbox` instead)",
    )

    # -- evaluation reports (wave 3) --------------------------------------------------------------
    EVAL_REPORT_MALFORMED = (
        "eval-report-malformed",
        M,
        "an evaluation report is not the canonical JSON `flsilo evaluate --report` writes, or its name does not match its contents",
        "ask the site for a fresh copy of the report and its .sig",
    )
    EVAL_ON_TRAINING_DATA = (
        "eval-on-training-data",
        U,
        "a signed evaluation report was asked for on the site's own training data",
        "evaluate on data held out for evaluation (never trained on), or leave out --report",
    )
    CARD_EVIDENCE = (
        "card-evidence",
        V,
        "the model card was refused: some of its evidence (the audit, the package, an evaluation report) does not verify",
        "run 'flsilo audit' with the same trust root; the message names the failed check",
    )
    EXPORT_EXTRA = (
        "export-extra",
        U,
        "ONNX export needs the export extra (onnx, onnxscript, onnxruntime)",
        "pip install 'flsilo[export]'",
    )
    EXPORT_MISMATCH = (
        "export-mismatch",
        V,
        "the exported ONNX model's outputs differ from the package's model on sample inputs; nothing was written",
    )
    EVAL_FOREIGN_PACKAGE = (
        "eval-foreign-package",
        V,
        "an evaluation report names a package this hub never issued, or another federation",
        "the site evaluated a package from elsewhere; ask which package it holds",
    )


def markdown() -> str:
    """The reference page for every code, grouped by exit status."""
    lines = [
        "# Error codes",
        "",
        "<!-- generated by `python -m flsilo.runtime.codes > docs/reference/error-codes.md`;"
        " a test keeps it current -->",
        "",
        "Every failure prints `flsilo: error[CODE]: FILE: what happened (hint: what to do)` and",
        "exits with the status below (see [exit codes](exit-codes.md)). The same codes appear",
        "in `--json` reports, in quarantine reason files, in the event log and in signed",
        "package provenance.",
        "",
    ]
    for status in ExitCode:
        members = [c for c in Code if c.exit == status]
        if not members:
            continue
        lines += [
            f"## Exit {int(status)}: {status.name.lower().replace('_', ' ')}",
            "",
            "| code | what happened | default hint |",
            "| --- | --- | --- |",
        ]
        lines += [f"| `{c.value}` | {c.summary} | {c.hint} |" for c in members]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(markdown())
