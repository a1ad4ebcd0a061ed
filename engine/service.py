"""`python -m engine.service`: run engine.run as a systemd service that starts at boot, restarts on failure,
logs to the journal and stops cleanly (SIGTERM: the mp4 and the JSONL stay whole, MQTT says offline).

    python -m engine.service print   --source 0 --serve 0.0.0.0:8080 --mqtt homeassistant.local   # the unit, on stdout
    sudo .venv/bin/python -m engine.service install --source 0 --mqtt mqtt://engine@homeassistant.local
    python -m engine.service install --user --source 0 --mqtt 192.168.1.10   # a user unit (loginctl enable-linger)

Every argument after the service's own (--name, --user, --unit-dir, --env-file, --no-enable) is engine.run's,
checked by engine.run's own parser before anything is written; --no-display is added when missing. A password
in --mqtt is moved out of the unit (world-readable, and in `ps`) into the environment file (mode 0600) as
EMOTION_MQTT_PASSWORD. docs/mqtt.md#run-it-as-a-service has the steps.
"""
from __future__ import annotations

import argparse
import getpass
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Sequence
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from engine.core.errors import UserError, cli_main
from engine.mqtt.options import PASSWORD_ENV

SYSTEM_DIR, USER_DIR = Path("/etc/systemd/system"), Path("~/.config/systemd/user")
SYSTEM_ENV, USER_ENV = Path("/etc/default"), Path("~/.config")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine.service", description=__doc__.split("\n\n")[0],
                                epilog="The remaining arguments are engine.run's (python -m engine.run --help).")
    p.add_argument("action", choices=("print", "install"), help="print the unit, or write it and enable + start it")
    p.add_argument("--name", default="emotion-engine", help="unit name (<name>.service) [emotion-engine]")
    p.add_argument("--user", action="store_true", help="a user unit (~/.config/systemd/user), no root needed; "
                   "it starts at boot once 'loginctl enable-linger' is on for the user")
    p.add_argument("--unit-dir", type=Path, help=f"where the unit goes [{SYSTEM_DIR}, or {USER_DIR} with --user]")
    p.add_argument("--env-file", type=Path, help=f"the environment file (the MQTT password) [{SYSTEM_ENV}/<name>, "
                                                 f"or {USER_ENV}/<name>.env with --user]")
    p.add_argument("--no-enable", action="store_true", help="install: write the files only (no systemctl)")
    return p


def split_password(run_args: list[str]) -> tuple[list[str], str | None]:
    """engine.run's arguments with the password taken out of a --mqtt URL, and the password."""
    out, password = list(run_args), None
    for i, arg in enumerate(out):
        key, _, inline = arg.partition("=")
        at = i if key == "--mqtt" and inline else i + 1 if arg == "--mqtt" and i + 1 < len(out) else None
        if at is None:
            continue
        value = inline if at == i else out[at]
        parts = urlsplit(value if "://" in value else f"mqtt://{value}")
        if parts.password is None:
            continue
        password = unquote(parts.password)
        netloc = f"{quote(unquote(parts.username or ''), safe='')}@{parts.netloc.rsplit('@', 1)[1]}"
        clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
        out[at] = f"--mqtt={clean}" if at == i else clean
    return out, password


def unit_text(run_args: Sequence[str], user: bool, env_file: Path, python: str = sys.executable,
              workdir: Path | None = None, account: str | None = None) -> str:
    """The unit: Restart=on-failure, the journal, SIGTERM with time to close the files, the env file."""
    cmd = " ".join(shlex.quote(a) for a in [python, "-m", "engine.run", *run_args]).replace("%", "%%")
    workdir = workdir or Path.cwd()
    who = [] if user else [f"User={account or getpass.getuser()}", "SupplementaryGroups=video audio"]
    lines = [
        "[Unit]", "Description=Emotion engine (python -m engine.run)", "Documentation=file://" + str(workdir / "docs/mqtt.md"),
        "Wants=network-online.target", "After=network-online.target", "StartLimitIntervalSec=0", "",
        "[Service]", "Type=simple", *who, f"WorkingDirectory={workdir}", f"EnvironmentFile=-{env_file}",
        "Environment=PYTHONUNBUFFERED=1", f"ExecStart={cmd}",
        "Restart=on-failure", "RestartSec=5", "KillSignal=SIGTERM", "KillMode=mixed", "TimeoutStopSec=20",
        "StandardOutput=journal", "StandardError=journal", "SyslogIdentifier=emotion-engine", "",
        "[Install]", f"WantedBy={'default.target' if user else 'multi-user.target'}", "",
    ]
    return "\n".join(lines)


def plan(args: argparse.Namespace, run_args: list[str]) -> tuple[str, str | None, Path, Path]:
    """(unit text, password or None, unit path, env file path), engine.run's arguments checked first."""
    from engine.run import build_parser as run_parser  # its own parser: a typo fails here, not at boot

    if "--no-display" not in run_args:
        run_args = [*run_args, "--no-display"]
    run_parser().parse_args(run_args)
    run_args, password = split_password(run_args)
    unit_dir = (args.unit_dir or (USER_DIR if args.user else SYSTEM_DIR)).expanduser()
    env_file = (args.env_file or (USER_ENV / f"{args.name}.env" if args.user else SYSTEM_ENV / args.name)).expanduser()
    account = os.environ.get("SUDO_USER") or getpass.getuser()
    return unit_text(run_args, args.user, env_file.resolve(), account=account), password, unit_dir / f"{args.name}.service", env_file


def install(args, unit: str, password: str | None, unit_path: Path, env_file: Path) -> None:
    try:
        unit_path.parent.mkdir(parents=True, exist_ok=True)
        unit_path.write_text(unit)
        if password is not None:
            env_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f"{PASSWORD_ENV}={password}\n")
            os.chmod(env_file, 0o600)
    except PermissionError as exc:
        raise UserError(f"cannot write {exc.filename}: permission denied (sudo, or --user for a user unit)") from None
    print(f"wrote {unit_path}" + (f" and {env_file} (the MQTT password, mode 0600)" if password else ""), file=sys.stderr)
    if args.no_enable:
        return
    ctl = ["systemctl", *(["--user"] if args.user else [])]
    for cmd in ([*ctl, "daemon-reload"], [*ctl, "enable", "--now", f"{args.name}.service"]):
        try:
            subprocess.run(cmd, check=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise UserError(f"{' '.join(cmd)} failed ({exc}); the unit is written: run it by hand") from None
    print(f"started: journalctl {'--user ' if args.user else ''}-u {args.name} -f   (logs);  "
          f"systemctl {'--user ' if args.user else ''}stop {args.name}   (a clean stop)", file=sys.stderr)
    if args.user:
        print(f"to start at boot without a login: sudo loginctl enable-linger {getpass.getuser()}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args, run_args = build_parser().parse_known_args(argv)
    unit, password, unit_path, env_file = plan(args, run_args)
    if args.action == "print":
        sys.stdout.write(unit)
        if password is not None:
            print(f"note: the --mqtt password is not in the unit: put {PASSWORD_ENV}=... in {env_file} (mode 0600)",
                  file=sys.stderr)
        return 0
    install(args, unit, password, unit_path, env_file)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
