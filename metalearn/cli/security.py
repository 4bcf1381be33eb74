"""CLI commands of the security model: `metalearn tokens …` and `metalearn certs`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from metalearn import documents
from metalearn.cli.runs import answer, client_for, print_json
from metalearn.views.tokens import role_text


def cmd_tokens_create(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        reply = client.create_token(args.name, args.role, args.expires or 0.0)
    if args.json:
        print_json({**documents.plain(reply.token), "secret": reply.secret})
    else:
        # The secret alone on stdout, so that `$(metalearn tokens create …)` captures it.
        print(reply.secret)
    return 0


def cmd_tokens_list(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        tokens = client.tokens()
    if args.json:
        print_json([documents.plain(t) for t in tokens])
        return 0
    print(f"{'NAME':<32} {'ROLE':<8} {'CREATED':<20} {'EXPIRES':<20} CREATED BY")
    for t in tokens:
        created = t.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
        expires = (
            t.expire_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
            if t.HasField("expire_time")
            else "never"
        )
        print(
            f"{t.name:<32} {role_text(t.role):<8} {created:<20} {expires:<20} {t.created_by or '-'}"
        )
    return 0


def cmd_tokens_whoami(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        token = client.whoami()
    return answer(args, documents.plain(token), f"{token.name} ({role_text(token.role)})")


def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        client.revoke_token(args.name)
    return answer(args, {"revoked": args.name}, f"revoked {args.name}")


def cmd_certs(args: argparse.Namespace) -> int:
    from metalearn.tls import make_pki

    pki = make_pki(Path(args.dir), args.host or ["localhost", "127.0.0.1", "::1"], args.name)
    value = {"ca": str(pki.ca), "cert": str(pki.cert), "key": str(pki.key)}
    return answer(args, value, f"CA {pki.ca}\ncertificate {pki.cert}\nkey {pki.key}")


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """`tokens create|list|revoke` and `certs`, on the `metalearn` parser."""
    tokens = sub.add_parser(
        "tokens", help="who may call the gateway (admins; whoami: anyone)"
    ).add_subparsers(dest="action", required=True)
    create = tokens.add_parser("create", parents=[common], help="make a token; prints its secret")
    create.add_argument("--name", required=True, help="the principal's name")
    create.add_argument(
        "--role",
        required=True,
        choices=("reader", "writer", "admin", "trainer"),
        help="what it may do (README: Security model)",
    )
    create.add_argument("--expires", type=float, metavar="DAYS", help="expire after DAYS days")
    create.set_defaults(func=cmd_tokens_create)
    lst = tokens.add_parser("list", parents=[common], help="every token (never a secret)")
    lst.set_defaults(func=cmd_tokens_list)
    whoami = tokens.add_parser("whoami", parents=[common], help="the name and role of my token")
    whoami.set_defaults(func=cmd_tokens_whoami)
    revoke = tokens.add_parser("revoke", parents=[common], help="revoke a token by name")
    revoke.add_argument("name", help="the token's (principal's) name")
    revoke.set_defaults(func=cmd_tokens_revoke)

    certs = sub.add_parser(
        "certs", help="make a CA and a certificate for TLS and mutual TLS (PEM files)"
    )
    certs.add_argument("--dir", required=True, help="where to write them")
    certs.add_argument(
        "--host",
        action="append",
        help="a name or IP address the certificate is for (repeatable; default localhost)",
    )
    certs.add_argument("--name", default="metalearn", help="file and common name")
    certs.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for scripts"
    )
    certs.set_defaults(func=cmd_certs)
