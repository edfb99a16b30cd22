"""Settings: where state lives and how to reach fal and Supabase.

Invariants:
- One setting moves all state: `DASHBOARD_DATA_DIR` (default `<repo>/data`) holds the SQLite
  file and local images, so tests point it at a temp folder and never touch real data.
- Secrets come from the environment first, then `.streamlit/secrets.toml` (top-level keys with
  the same names). They are never part of `repr()` nor of `public_summary()`.
- No FAL_KEY means dry run: everything but sending.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SECRETS = REPO_ROOT / ".streamlit" / "secrets.toml"

_NAMES = (
    "FAL_KEY", "FAL_RUN_URL", "FAL_QUEUE_URL",
    "SUPABASE_URL", "SUPABASE_KEY", "SUPABASE_BUCKET",
    "DASHBOARD_DATA_DIR", "DASHBOARD_CONCURRENCY",
    "DASHBOARD_MAX_UPLOAD_BYTES", "DASHBOARD_MAX_LONG_EDGE",
    "DASHBOARD_METRICS_WORKER", "DASHBOARD_OUTAGE_LIMIT_S", "DASHBOARD_AUTO_RESUME",
)


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    fal_key: str | None = field(default=None, repr=False)
    fal_run_url: str = "https://fal.run"
    fal_queue_url: str = "https://queue.fal.run"
    supabase_url: str | None = None
    supabase_key: str | None = field(default=None, repr=False)
    supabase_bucket: str = "references"
    concurrency: int = 8
    max_upload_bytes: int = 20 * 1024 * 1024
    max_long_edge: int = 2048
    # the detached fidelity-metrics worker (face identity needs dlib: a team may not want it)
    metrics_worker: bool = True
    # how long a batch rides through fal being unreachable before it stops (resumable)
    outage_limit_s: float = 600.0
    # the dashboard resumes, when it starts, batches a dead runner left unfinished
    auto_resume: bool = True

    @property
    def dry_run(self) -> bool:
        """True when there is no fal key: payloads are built and recorded, nothing is sent."""
        return not self.fal_key

    @property
    def db_path(self) -> Path:
        return self.data_dir / "dashboard.db"

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
            + (f" (bucket {self.supabase_bucket})" if self.storage_backend == "supabase" else ""),
            "data_dir": str(self.data_dir),
        }

    def ensure_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.images_dir.mkdir(parents=True, exist_ok=True)


def _read_secrets(path: Path) -> dict[str, str]:
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as e:
        from core.errors import ConfigError

        raise ConfigError(f"{path} is not valid TOML ({e}); fix or remove it.") from None
    return {k: str(v) for k, v in raw.items() if k in _NAMES and not isinstance(v, dict)}


def load_settings(env: dict[str, str] | None = None, secrets_path: Path | None = None) -> Settings:
    """Settings from the environment, then secrets.toml, then embedded defaults."""
    env = dict(os.environ if env is None else env)
    secrets = _read_secrets(secrets_path or Path(env.get("DASHBOARD_SECRETS", DEFAULT_SECRETS)))

    def get(name: str) -> str | None:
        value = env.get(name) or secrets.get(name)
        return value.strip() if value and value.strip() else None

    def get_int(name: str, default: int) -> int:
        value = get(name)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            from core.errors import ConfigError

            raise ConfigError(f"{name} must be a whole number, got {value!r}.") from None

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

    data_dir = Path(get("DASHBOARD_DATA_DIR") or REPO_ROOT / "data").expanduser().resolve()
    return Settings(
        data_dir=data_dir,
        fal_key=get("FAL_KEY"),
        fal_run_url=(get("FAL_RUN_URL") or "https://fal.run").rstrip("/"),
        fal_queue_url=(get("FAL_QUEUE_URL") or "https://queue.fal.run").rstrip("/"),
        supabase_url=(get("SUPABASE_URL") or "").rstrip("/") or None,
        supabase_key=get("SUPABASE_KEY"),
        supabase_bucket=get("SUPABASE_BUCKET") or "references",
        concurrency=get_int("DASHBOARD_CONCURRENCY", 8),
        max_upload_bytes=get_int("DASHBOARD_MAX_UPLOAD_BYTES", 20 * 1024 * 1024),
        max_long_edge=get_int("DASHBOARD_MAX_LONG_EDGE", 2048),
        metrics_worker=get_bool("DASHBOARD_METRICS_WORKER", True),
        outage_limit_s=float(get_int("DASHBOARD_OUTAGE_LIMIT_S", 600)),
        auto_resume=get_bool("DASHBOARD_AUTO_RESUME", True),
    )
