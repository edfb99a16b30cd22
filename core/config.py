"""Settings: where state lives and how to reach fal and Supabase.

Invariants:
- One setting moves all state: `DASHBOARD_DATA_DIR` (default `<repo>/data`) holds the SQLite
  file and local images, so tests point it at a temp folder and never touch real data.
- Secrets come from the environment first, then `.streamlit/secrets.toml` (top-level keys with
  the same names). They are never part of `repr()` nor of `public_summary()`.
- No FAL_KEY means dry run: everything but sending.
- Every setting is checked when it is read: a value out of range is refused at start with one
  `ConfigError` line naming the setting and the allowed values, never later as a strange
  refusal of a photo or a batch. SUPABASE_URL and SUPABASE_KEY come as a pair.
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SECRETS = REPO_ROOT / ".streamlit" / "secrets.toml"

# Allowed ranges, inclusive. The long edge cannot go below the 256 px minimum short side of a
# reference photo (core.photos.images.DEFAULT_MIN_SHORT_SIDE): every photo would be refused.
RANGES: dict[str, tuple[int, int]] = {
    "DASHBOARD_CONCURRENCY": (1, 64),
    "DASHBOARD_MAX_UPLOAD_BYTES": (1024, 500 * 1024 * 1024),
    "DASHBOARD_MAX_LONG_EDGE": (256, 8192),
    "DASHBOARD_OUTAGE_LIMIT_S": (0, 24 * 3600),
    "DASHBOARD_METRICS_WORKERS": (1, 32),
}
# Supabase's own rule for bucket names (storage-api `isValidBucketName`): 1 to 63 characters.
_BUCKET_NAME = re.compile(r"^(\w|!|-|\.|\*|'|\(|\)| |&|\$|@|=|;|:|\+|,|\?)+$", re.ASCII)

# Every setting, once. Each is read from the environment, then from secrets.toml (but
# DASHBOARD_SECRETS, which names that file, only from the environment); the README's settings table has a row for each
# (tests/test_config.py), and the dashboard's cached Settings are keyed on all of them.
SETTINGS = (
    "FAL_KEY", "FAL_RUN_URL", "FAL_QUEUE_URL", "FAL_OPENAPI_URL", "FAL_API_URL",
    "SUPABASE_URL", "SUPABASE_KEY", "SUPABASE_BUCKET", "SUPABASE_RESULTS_BUCKET",
    "DASHBOARD_DATA_DIR", "DATABASE_URL", "DASHBOARD_CONCURRENCY",
    "DASHBOARD_MAX_UPLOAD_BYTES", "DASHBOARD_MAX_LONG_EDGE",
    "DASHBOARD_METRICS_WORKER", "DASHBOARD_METRICS_WORKERS", "DASHBOARD_OUTAGE_LIMIT_S", "DASHBOARD_AUTO_RESUME",
    "DASHBOARD_LISTEN_ON_ALL_INTERFACES",
    "DASHBOARD_BUDGET_USD_PER_BATCH", "DASHBOARD_BUDGET_USD_PER_DAY", "DASHBOARD_CONFIRM_ABOVE_USD",
    "DASHBOARD_AUTH", "DASHBOARD_AUTH_HEADER", "DASHBOARD_AUTH_PROXY_SECRET",
    "DASHBOARD_ROLE_VIEWERS", "DASHBOARD_ROLE_RATERS", "DASHBOARD_ROLE_RUNNERS", "DASHBOARD_ROLE_ADMINS",
    "DASHBOARD_USER",
    "DASHBOARD_SECRETS",
)
AUTH_MODES = ("none", "oidc", "header")
# core.access's roles, lowest first, and the setting that names each role's people
ROLE_SETTING_OF = {"viewer": "DASHBOARD_ROLE_VIEWERS", "rater": "DASHBOARD_ROLE_RATERS",
                   "runner": "DASHBOARD_ROLE_RUNNERS", "admin": "DASHBOARD_ROLE_ADMINS"}
# the header an authenticating proxy must also send, carrying DASHBOARD_AUTH_PROXY_SECRET
PROXY_SECRET_HEADER = "X-Dashboard-Proxy-Secret"
# what Streamlit's st.login needs in secrets.toml's [auth] section (Streamlit's documentation)
OIDC_KEYS = ("redirect_uri", "cookie_secret", "client_id", "client_secret", "server_metadata_url")


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    fal_key: str | None = field(default=None, repr=False)
    fal_run_url: str = "https://fal.run"
    fal_queue_url: str = "https://queue.fal.run"
    # fal's per-endpoint queue OpenAPI documents (`?endpoint_id=<id>`) and its Platform API
    # (model search, prices): core.fal.catalogue
    fal_openapi_url: str = "https://fal.ai/api/openapi/queue/openapi.json"
    fal_api_url: str = "https://api.fal.ai/v1"
    supabase_url: str | None = None
    supabase_key: str | None = field(default=None, repr=False)
    supabase_bucket: str = "references"
    # the PRIVATE bucket of result images and thumbnails, read through the server (core.blobs.results)
    supabase_results_bucket: str = "results"
    # unset: the SQLite file under the data directory; postgresql://...: that Postgres (15+),
    # e.g. Supabase's own (core.store.pg). It may carry a password: never shown (`database_label`)
    database_url: str | None = field(default=None, repr=False)
    concurrency: int = 8
    max_upload_bytes: int = 20 * 1024 * 1024
    max_long_edge: int = 2048
    # the detached fidelity-metrics worker (face identity needs dlib: a team may not want it)
    metrics_worker: bool = True
    # processes that measure fidelity at once (each loads dlib's models, ~190 MB); see
    # core.evaluation.fidelity.MeasuringPool and the README's measurements for the default
    metrics_workers: int = 2
    # how long a batch rides through fal being unreachable before it stops (resumable)
    outage_limit_s: float = 600.0
    # the dashboard resumes, when it starts, batches a dead runner left unfinished
    auto_resume: bool = True
    # spending limits in USD (None: no limit) and the estimate above which Send asks first
    # (0: always); core.batches.budget applies them
    budget_usd_per_batch: float | None = None
    budget_usd_per_day: float | None = None
    confirm_above_usd: float = 3.0
    # off: the server listens on loopback only, since whoever reaches it uses the team's fal key
    listen_on_all_interfaces: bool = False
    # sign-in (core.access): none (typed names, everyone an admin), oidc (st.login), header (a proxy)
    auth: str = "none"
    auth_header: str = "X-Forwarded-Email"
    auth_proxy_secret: str | None = field(default=None, repr=False)
    # (role word, its lowercased e-mails, @domains or *) pairs (core.access.role_of)
    roles: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # who the command line acts as when --as is not given
    user: str | None = None

    @property
    def listen_address(self) -> str:
        """The address `scripts/run` gives Streamlit (`python -m core listen-address`)."""
        return "0.0.0.0" if self.listen_on_all_interfaces else "127.0.0.1"

    @property
    def dry_run(self) -> bool:
        """True when there is no fal key: payloads are built and recorded, nothing is sent."""
        return not self.fal_key

    @property
    def db_path(self) -> Path:
        return self.data_dir / "dashboard.db"

    @property
    def database_label(self) -> str:
        """Which store this is, for a page or a log: the SQLite file, or the Postgres server and
        database without user or password."""
        return url_label(self.database_url) if self.database_url else str(self.db_path)

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def storage_backend(self) -> str:
        return "supabase" if (self.supabase_url and self.supabase_key) else "local"

    def public_summary(self) -> dict[str, str]:
        """What a page or a log may show: modes and places, never a secret."""
        return {
            "fal": "dry run (no FAL_KEY)" if self.dry_run else "live",
            "fal_queue_url": self.fal_queue_url,
            "storage": self.storage_backend
            + (f" (bucket {self.supabase_bucket}, results in {self.supabase_results_bucket})"
               if self.storage_backend == "supabase" else ""),
            "data_dir": str(self.data_dir),
            "database": self.database_label,
        }

    def ensure_dirs(self) -> None:
        """Create the data directory and its images folder. A data directory that exists but
        cannot be written is left as it is: reads still work (the store opens read-only) and a
        write says so; one that cannot be created at all is a ConfigError."""
        for path in (self.data_dir, self.images_dir):
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                if self.data_dir.is_dir():
                    return
                from core.errors import ConfigError

                raise ConfigError(f"cannot create the data directory {self.data_dir} ({e.strerror}): "
                                  "set DASHBOARD_DATA_DIR to a directory this user may write.") from None


def _read_secrets(path: Path) -> dict[str, str]:
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as e:
        from core.errors import ConfigError

        raise ConfigError(f"{path} is not valid TOML ({e}); fix or remove it.") from None
    return {k: str(v) for k, v in raw.items() if k in SETTINGS and not isinstance(v, dict)}


def _oidc_section(path: Path) -> dict:
    """secrets.toml's [auth] section, which Streamlit's st.login reads (empty when absent)."""
    try:
        with open(path, "rb") as f:
            section = tomllib.load(f).get("auth")
    except (FileNotFoundError, tomllib.TOMLDecodeError):
        return {}
    return section if isinstance(section, dict) else {}


def _role_list(name: str, value: str | None) -> tuple[str, ...]:
    """`a@x.com, @team.com, *` -> the entries, lowercased; a malformed entry is a one-line error."""
    entries = []
    for raw in (value or "").split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        local, at, host = entry.rpartition("@")
        if entry != "*" and not (at and "." in host and not any(c.isspace() for c in entry)
                                 and "@" not in local):
            raise _error(f"{name} must list e-mails, @domains or *, separated by commas; "
                         f"{raw.strip()!r} is none of them.")
        entries.append(entry)
    return tuple(entries)


def _auth_settings(get, secrets_path: Path) -> dict:
    """DASHBOARD_AUTH and what each mode needs, each checked here so a bad one is one line."""
    auth = (get("DASHBOARD_AUTH") or "none").lower()
    if auth not in AUTH_MODES:
        raise _error(f"DASHBOARD_AUTH must be one of {', '.join(AUTH_MODES)}, got {auth!r}.")
    roles = tuple((word, _role_list(name, get(name))) for word, name in ROLE_SETTING_OF.items())
    header = get("DASHBOARD_AUTH_HEADER") or "X-Forwarded-Email"
    if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", header):
        raise _error(f"DASHBOARD_AUTH_HEADER must be an HTTP header name like X-Forwarded-Email, got {header!r}.")
    secret = get("DASHBOARD_AUTH_PROXY_SECRET")
    if auth != "none" and not any(names for _, names in roles):
        raise _error(f"DASHBOARD_AUTH={auth} lets in only the people a role names, and no "
                     "DASHBOARD_ROLE_VIEWERS/RATERS/RUNNERS/ADMINS names anyone: set at least DASHBOARD_ROLE_ADMINS.")
    if auth == "header" and (not secret or len(secret) < 16):
        raise _error("DASHBOARD_AUTH=header needs DASHBOARD_AUTH_PROXY_SECRET (16 characters or more), which the "
                     f"proxy sends in {PROXY_SECRET_HEADER}: without it anyone reaching the port could claim "
                     "an identity with a header.")
    if auth == "oidc":
        section = _oidc_section(secrets_path)
        missing = [k for k in OIDC_KEYS if not str(section.get(k) or "").strip()]
        if missing:
            raise _error(f"DASHBOARD_AUTH=oidc needs an [auth] section in {secrets_path} with "
                         f"{', '.join(missing)} (Streamlit's st.login reads it; see the README).")
    return {"auth": auth, "auth_header": header, "auth_proxy_secret": secret, "roles": roles}


def load_settings(env: dict[str, str] | None = None, secrets_path: Path | None = None) -> Settings:
    """Settings from the environment, then secrets.toml, then embedded defaults."""
    env = dict(os.environ if env is None else env)
    secrets_path = secrets_path or Path(env.get("DASHBOARD_SECRETS", DEFAULT_SECRETS))
    secrets = _read_secrets(secrets_path)

    def get(name: str) -> str | None:
        value = env.get(name) or secrets.get(name)
        return value.strip() if value and value.strip() else None

    def get_int(name: str, default: int) -> int:
        value = get(name)
        if value is None:
            return default
        low, high = RANGES[name]
        try:
            number = int(value)
        except ValueError:
            raise _error(f"{name} must be a whole number from {low} to {high}, got {value!r}.") from None
        if not low <= number <= high:
            raise _error(f"{name} must be from {low} to {high}, got {number}.")
        return number

    supabase_url = (get("SUPABASE_URL") or "").rstrip("/") or None
    supabase_key = get("SUPABASE_KEY")
    if bool(supabase_url) != bool(supabase_key):
        have, missing = ("SUPABASE_URL", "SUPABASE_KEY") if supabase_url else ("SUPABASE_KEY", "SUPABASE_URL")
        raise _error(f"{have} is set but {missing} is not: set both to keep photos in Supabase "
                     "Storage, or neither to keep them on this machine.")
    if supabase_url:
        _check_supabase_url(supabase_url)
    bucket = get("SUPABASE_BUCKET") or "references"
    results_bucket = get("SUPABASE_RESULTS_BUCKET") or "results"
    for name, value in (("SUPABASE_BUCKET", bucket), ("SUPABASE_RESULTS_BUCKET", results_bucket)):
        if len(value) > 63 or not _BUCKET_NAME.match(value):
            raise _error(f"{name} {value!r} is not a valid Supabase bucket name: use up to 63 "
                         "ASCII letters, digits, '-', '_' or '.' (no '/').")
    if results_bucket == bucket:
        raise _error(f"SUPABASE_RESULTS_BUCKET and SUPABASE_BUCKET are both {bucket!r}: results need "
                     "their own private bucket (reference photos' is public); give them different names.")
    fal_run_url = (get("FAL_RUN_URL") or "https://fal.run").rstrip("/")
    fal_queue_url = (get("FAL_QUEUE_URL") or "https://queue.fal.run").rstrip("/")
    fal_openapi_url = (get("FAL_OPENAPI_URL") or "https://fal.ai/api/openapi/queue/openapi.json").rstrip("/")
    fal_api_url = (get("FAL_API_URL") or "https://api.fal.ai/v1").rstrip("/")
    for name, url in (("FAL_RUN_URL", fal_run_url), ("FAL_QUEUE_URL", fal_queue_url),
                      ("FAL_OPENAPI_URL", fal_openapi_url), ("FAL_API_URL", fal_api_url)):
        if not _is_http_url(url):
            like = {"FAL_RUN_URL": "https://fal.run", "FAL_QUEUE_URL": "https://queue.fal.run",
                    "FAL_OPENAPI_URL": "https://fal.ai/api/openapi/queue/openapi.json",
                    "FAL_API_URL": "https://api.fal.ai/v1"}[name]
            raise _error(f"{name} must be an http(s) URL like {like}, got {url!r}.")

    def get_bool(name: str, default: bool) -> bool:
        value = get(name)
        if value is None:
            return default
        if value.lower() in ("1", "true", "on", "yes"):
            return True
        if value.lower() in ("0", "false", "off", "no"):
            return False
        from core.errors import ConfigError

        raise ConfigError(f"{name} must be on or off, got {value!r}.")

    def get_usd(name: str, *, zero_ok: bool) -> float | None:
        return parse_usd(name, get(name), zero_ok=zero_ok)

    confirm_above = get_usd("DASHBOARD_CONFIRM_ABOVE_USD", zero_ok=True)
    data_dir = Path(get("DASHBOARD_DATA_DIR") or REPO_ROOT / "data").expanduser().resolve()
    return Settings(
        data_dir=data_dir,
        fal_key=get("FAL_KEY"),
        fal_run_url=fal_run_url,
        fal_queue_url=fal_queue_url,
        fal_openapi_url=fal_openapi_url,
        fal_api_url=fal_api_url,
        supabase_url=supabase_url,
        supabase_key=supabase_key,
        supabase_bucket=bucket,
        supabase_results_bucket=results_bucket,
        database_url=_database_url(get("DATABASE_URL")),
        concurrency=get_int("DASHBOARD_CONCURRENCY", 8),
        max_upload_bytes=get_int("DASHBOARD_MAX_UPLOAD_BYTES", 20 * 1024 * 1024),
        max_long_edge=get_int("DASHBOARD_MAX_LONG_EDGE", 2048),
        metrics_worker=get_bool("DASHBOARD_METRICS_WORKER", True),
        metrics_workers=get_int("DASHBOARD_METRICS_WORKERS", 2),
        outage_limit_s=float(get_int("DASHBOARD_OUTAGE_LIMIT_S", 600)),
        auto_resume=get_bool("DASHBOARD_AUTO_RESUME", True),
        budget_usd_per_batch=get_usd("DASHBOARD_BUDGET_USD_PER_BATCH", zero_ok=False),
        budget_usd_per_day=get_usd("DASHBOARD_BUDGET_USD_PER_DAY", zero_ok=False),
        confirm_above_usd=3.0 if confirm_above is None else confirm_above,
        listen_on_all_interfaces=get_bool("DASHBOARD_LISTEN_ON_ALL_INTERFACES", False),
        user=(get("DASHBOARD_USER") or "")[:100] or None,
        **_auth_settings(get, secrets_path),
    )


def parse_usd(name: str, value: str | None, *, zero_ok: bool) -> float | None:
    """An amount in USD for the setting `name` (None or blank: unset); a bad one is a ConfigError.
    A limit of 0 would refuse every batch: unset is "no limit", so 0 is taken for a typo."""
    value = (value or "").strip()
    if not value:
        return None
    try:
        amount = float(value.removeprefix("$"))
    except ValueError:
        amount = float("nan")
    if not (0 <= amount <= 1_000_000) or (amount == 0 and not zero_ok):
        what = "from 0 to 1000000" if zero_ok else "above 0, at most 1000000"
        raise _error(f"{name} must be an amount in USD {what}, like 5 or 12.50, got {value!r}"
                     + ("." if zero_ok else " (leave it unset for no limit)."))
    return amount


def is_loopback(address: str | None) -> bool:
    """Whether a server bound to `address` is reachable from this machine only. Streamlit's empty
    default (and "0.0.0.0", "::") means every interface."""
    import ipaddress

    if not address:
        return False
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def _error(message: str) -> Exception:
    from core.errors import ConfigError

    return ConfigError(message)


def _is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def url_label(url: str) -> str:
    """A Postgres URL as it may be shown: server and database, never the user or password."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    return f"postgresql://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


def _database_url(url: str | None) -> str | None:
    """DATABASE_URL as libpq reads it (postgresql:// or postgres://, a host or a socket and a
    database); refused at start, without echoing a password, when it is anything else."""
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if (parts is None or parts.scheme not in ("postgresql", "postgres")
            or not parts.path.strip("/") or (port is not None and not 0 < port < 65536)):
        shown = re.sub(r"(//[^/@]*?:)[^/@]*@", r"\1***@", url)
        raise _error("DATABASE_URL must be a Postgres URL like postgresql://user:password@host:5432/postgres "
                     f"(unset: the SQLite file in the data directory), got {shown[:200]!r}.")
    if port == 6543 and (parts.hostname or "").endswith(".pooler.supabase.com"):
        # transaction mode keeps no session: no advisory locks, no session settings (docs/postgres.md)
        raise _error("DATABASE_URL points at Supabase's pooler in transaction mode (port 6543), which keeps "
                     "no session for the store's locks: use the direct connection or the session pooler "
                     "(port 5432).")
    return url


def _check_supabase_url(url: str) -> None:
    """The project URL: the client appends /storage/v1 itself, so a pasted API path would
    double it and every call would answer "route not found"."""
    if not _is_http_url(url):
        raise _error(f"SUPABASE_URL must be the project URL like https://<project>.supabase.co, got "
                     f"{url!r}.")
    path = urlsplit(url).path.rstrip("/")
    if re.search(r"/(storage|rest|auth)/v1$", path):
        raise _error(f"SUPABASE_URL must be the project URL without an API path: use "
                     f"{url[: len(url) - len(path)]!r}, not {url!r}.")
