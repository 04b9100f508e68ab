"""`lineside keys` and `lineside users …`: CURVE keys for the transport, console users of the station."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edge.cli.app import (
    USER_ERRORS,
    ConfigOption,
    app,
    fail,
)
from edge.config import load_config
from edge.transport.keys import KeyFileError

if TYPE_CHECKING:
    from edge.station.store import Store



@app.command()
def keys(
    out: Annotated[Path, typer.Option("--out", help="folder to write the key pair into")],
    name: Annotated[str, typer.Option("--name", help="file name stem: NAME.key (public), NAME.key_secret")],
    overwrite: Annotated[bool, typer.Option(help="replace an existing pair (peers with the old key are refused)")]
    = False,
) -> None:
    """Create a ZeroMQ CURVE key pair for the edge–station link."""
    from edge.transport.keys import create_keypair

    try:
        public, secret = create_keypair(out, name, overwrite=overwrite)
    except KeyFileError as exc:
        fail(exc)
    typer.echo(f"public key {public} (give this to the other side)\nsecret key {secret} (keep it here, mode 0600)")


users_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Console users of the review station.")
app.add_typer(users_app, name="users")


def _station_store(config: Path) -> Store:
    from edge.station.store import Store  # lazily: the daemon's commands do not need SQLAlchemy

    try:
        cfg = load_config(config)
    except USER_ERRORS as exc:
        fail(exc)
    return Store(cfg.station.database_url, cfg.station.storage_dir)


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="user name (letters, digits, _ . @ -)")],
    role: Annotated[str, typer.Option(help="reviewer or admin")] = "reviewer",
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="read the password from the first line of stdin instead of a prompt")] = False,
    config: ConfigOption = Path("config.yaml"),
) -> None:
    """Add a console user; the password is asked for (twice) unless --password-stdin."""
    from edge.station.users import UserError, add_user

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    store = _station_store(config)
    try:
        user = add_user(store, name, password, role)
    except UserError as exc:
        fail(exc)
    finally:
        store.close()
    typer.echo(f"user {user.username} added ({user.role})")


@users_app.command("list")
def users_list(config: ConfigOption = Path("config.yaml")) -> None:
    """List console users."""
    from edge.station.users import list_users

    store = _station_store(config)
    try:
        for user in list_users(store):
            created = time.strftime("%Y-%m-%d %H:%M", time.localtime(user.created_wall))
            typer.echo(f"{user.username}\t{user.role}\t{'disabled' if user.disabled else 'active'}\t{created}")
    finally:
        store.close()


@users_app.command("disable")
def users_disable(name: str, config: ConfigOption = Path("config.yaml"),
                  enable: Annotated[bool, typer.Option(help="enable the user again instead")] = False) -> None:
    """Disable a console user (their sessions end at once); --enable undoes it."""
    from edge.station.users import UserError, set_disabled

    store = _station_store(config)
    try:
        user = set_disabled(store, name, not enable)
    except UserError as exc:
        fail(exc)
    finally:
        store.close()
    typer.echo(f"user {user.username} {'disabled' if user.disabled else 'enabled'}")
