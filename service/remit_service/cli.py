"""The ``remit`` command line: serve, keys, agent, grant, mint, exchange, describe, revoke,
verify, inspect, demo.

Exit codes: 0 success (``verify``: allowed), 1 failure, 2 usage error,
3 ``verify`` denied.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import remit

__all__ = ["main"]

EXIT_DENIED = 3
DEFAULT_TARGET = "127.0.0.1:50051"
SHUTDOWN_GRACE = 5.0  # seconds in-flight RPCs get to finish after SIGTERM / SIGINT


class UsageError(Exception):
    """Bad command-line input: exit 2 with the message."""


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False))


def _json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what} is not valid JSON: {exc.msg}") from None


def _token_arg(text: str) -> str:
    return sys.stdin.read().strip() if text == "-" else text.strip()


# -- serve ----------------------------------------------------------------------------


def _cmd_serve(args: argparse.Namespace) -> int:
    from remit._redis import check_address

    from ._config import ConfigError, dev_config, load_config
    from ._keystore import KeyStore
    from ._server import Server

    if bool(args.config) == bool(args.dev):
        raise UsageError("give exactly one of --config FILE or --dev")
    if args.dev:
        data_dir = Path(args.data_dir or os.environ.get("REMIT_DEV_DIR", ".remit-dev"))
        api_key = os.environ.get("REMIT_DEV_API_KEY", "dev")
        config = dev_config(
            data_dir=data_dir,
            redis=args.redis or os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            api_key=api_key,
            grpc_port=50051 if args.grpc_port is None else args.grpc_port,
            http_port=8080 if args.http_port is None else args.http_port,
            prefix=args.prefix or "remit:",
        )
        KeyStore(config.keys_dir).ensure()
        print(
            "WARNING: remit is running in DEV MODE: every action and audience may be granted, "
            "the API key comes from REMIT_DEV_API_KEY"
            f"{' (default: dev)' if api_key == 'dev' else ''}, "
            f"and keys live unprotected in {config.keys_dir}. Never use this in production.",
            file=sys.stderr,
        )
    else:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(f"remit: config error: {exc}", file=sys.stderr)
            return 1
        overrides: dict[str, Any] = {}
        if args.grpc_port is not None:
            overrides["grpc_port"] = args.grpc_port
        if args.http_port is not None:
            overrides["http_port"] = args.http_port
        if args.redis:
            overrides["redis"] = args.redis
        if overrides:
            from dataclasses import replace

            config = replace(config, **overrides)
    try:
        check_address(config.redis)  # a clear usage error, the password masked
    except ValueError as exc:
        raise UsageError(f"--redis: {exc}") from None
    try:
        config = _tls_overrides(config, args)
        server = Server(config).start()
    except ConfigError as exc:
        print(f"remit: config error: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(
        json.dumps(
            {
                "ready": True,
                "issuer": config.issuer,
                "grpc": server.grpc_target,
                "http": server.http_url,
                "jwks": f"{server.http_url}/.well-known/jwks.json",
                "dev": config.dev,
                "tls": "mtls" if config.tls_client_ca else bool(config.tls_cert),
            }
        ),
        flush=True,
    )
    stop.wait()
    # Graceful: new RPCs are refused at once (UNAVAILABLE: a client with a retry policy
    # moves to another replica), in-flight ones may finish for up to SHUTDOWN_GRACE s.
    print(
        f"remit: stopping; draining in-flight requests (up to {SHUTDOWN_GRACE:g} s)",
        file=sys.stderr,
        flush=True,
    )
    server.stop(grace=SHUTDOWN_GRACE)
    print("remit: stopped", file=sys.stderr, flush=True)
    return 0


def _tls_overrides(config: Any, args: argparse.Namespace) -> Any:
    """``--tls-cert/--tls-key/--tls-client-ca`` over the config's ``[server]`` keys."""
    from ._tls import with_tls

    if not (args.tls_cert or args.tls_key or args.tls_client_ca):
        return config
    return with_tls(
        config,
        cert=Path(args.tls_cert) if args.tls_cert else None,
        key=Path(args.tls_key) if args.tls_key else None,
        client_ca=Path(args.tls_client_ca) if args.tls_client_ca else None,
    )


# -- keys -----------------------------------------------------------------------------


def _cmd_keys(args: argparse.Namespace) -> int:
    from ._keystore import KeyStore

    store = KeyStore(args.dir)
    if args.keys_command == "generate":
        if store.keys():
            raise UsageError(f"{args.dir} already has keys; use 'remit keys rotate'")
        key = store.generate()
        _print_json({"generated": key.kid})
    elif args.keys_command == "rotate":
        key = store.generate(activate_in=args.activate_in)
        _print_json({"new": key.kid, "activates_at": int(key.activates_at)})
    else:
        now = time.time()
        keys = store.keys()
        live = (
            {
                k.kid
                for k in store.published(
                    now=now, max_token_ttl=args.max_token_ttl, margin=args.margin
                )
            }
            if keys
            else set()
        )
        signing = store.signing_key(now).kid if keys else None
        rows = []
        for key in keys:
            if key.kid == signing:
                status = "signing"
            elif not key.active(now):
                status = "pending"
            else:
                status = "published" if key.kid in live else "retired"
            rows.append(
                {
                    "kid": key.kid,
                    "created_at": int(key.created_at),
                    "activates_at": int(key.activates_at),
                    "status": status,
                }
            )
        _print_json(rows)
    return 0


def _cmd_agent(args: argparse.Namespace) -> int:
    from remit.agent import AgentKey

    if args.agent_command == "keygen":
        key = AgentKey.generate()
        try:
            key.save(args.out)
        except FileExistsError:
            raise UsageError(f"{args.out} exists; refusing to overwrite a key") from None
        _print_json({"path": args.out, "thumbprint": key.thumbprint})
    else:
        try:
            key = AgentKey.load(args.key)
        except remit.KeyLoadError as exc:
            raise UsageError(str(exc)) from None
        _print_json({"thumbprint": key.thumbprint, "jwk": key.public_jwk})
    return 0


# -- app commands -----------------------------------------------------------------------


def _client(args: argparse.Namespace) -> remit.Client:
    api_key = args.api_key or os.environ.get("REMIT_API_KEY")
    creds, has_cert = _channel_credentials(args)
    if not api_key and not has_cert:
        raise UsageError("an API key is needed: --api-key or REMIT_API_KEY (or a --tls-cert)")
    return remit.Client(args.target, api_key=api_key or None, credentials=creds)


def _channel_credentials(args: argparse.Namespace) -> tuple[Any, bool]:
    """TLS channel credentials from --tls-ca/--tls-cert/--tls-key (or REMIT_TLS_*), and
    whether a client certificate is presented (mTLS: it may stand in for the API key)."""
    paths = {
        name: getattr(args, f"tls_{name}", None) or os.environ.get(f"REMIT_TLS_{name.upper()}")
        for name in ("ca", "cert", "key")
    }
    if not any(paths.values()):
        return None, False
    if bool(paths["cert"]) != bool(paths["key"]):
        raise UsageError("--tls-cert and --tls-key: give both or neither")
    blobs: dict[str, bytes | None] = {}
    for name, path in paths.items():
        try:
            blobs[name] = Path(path).read_bytes() if path else None
        except OSError as exc:
            raise UsageError(f"--tls-{name}: {exc}") from None
    import grpc

    creds = grpc.ssl_channel_credentials(blobs["ca"], blobs["key"], blobs["cert"])
    return creds, blobs["cert"] is not None


def _capabilities_arg(items: Sequence[str] | None) -> list[dict[str, Any]]:
    caps: list[dict[str, Any]] = []
    for text in items or ():
        value = _json_arg(text, "--capability")
        caps.extend(value if isinstance(value, list) else [value])
    return caps


def _cmd_grant(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.grant_command == "create":
            grant = client.create_grant(
                subject=args.subject,
                agent=args.agent,
                audience=args.audience,
                capabilities=_capabilities_arg(args.capability),
                purpose=args.purpose,
                ttl=args.ttl,
            )
            _print_json(grant.__dict__)
        elif args.grant_command == "get":
            _print_json(client.get_grant(args.grant_id).__dict__)
        else:
            _print_json(
                [
                    g.__dict__
                    for g in client.list_grants(
                        subject=args.subject or "",
                        agent=args.agent or "",
                        include_inactive=args.all,
                    )
                ]
            )
    return 0


def _cmd_mint(args: argparse.Namespace) -> int:
    with _client(args) as client:
        token = client.mint(
            args.grant_id,
            capabilities=_capabilities_arg(args.capability) or None,
            ttl=args.ttl,
            audience=args.audience,
            cnf_jkt=args.cnf_jkt or "",
        )
    print(token)
    return 0


def _cmd_exchange(args: argparse.Namespace) -> int:
    try:
        key = remit.agent.AgentKey.load(args.key)
    except remit.KeyLoadError as exc:
        raise UsageError(str(exc)) from None
    with remit.Client(args.target) as client:  # Exchange needs no app credential
        child = client.exchange(
            _token_arg(args.token),
            key,
            capabilities=_capabilities_arg(args.capability) or None,
            ttl=args.ttl,
            audience=args.audience,
            actor=args.actor or "",
            cnf_jkt=args.cnf_jkt or "",
        )
    print(child.token)
    return 0


def _cmd_describe(args: argparse.Namespace) -> int:
    if bool(args.grant_id) == bool(args.capabilities):
        raise UsageError("give exactly one of GRANT_ID or --capabilities FILE")
    caps = None
    if args.capabilities:
        try:
            text = Path(args.capabilities).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read {args.capabilities}: {exc.strerror}") from None
        value = _json_arg(text, args.capabilities)
        caps = value if isinstance(value, list) else [value]
    with _client(args) as client:
        consent = client.describe(args.grant_id, capabilities=caps)
    if args.json:
        _print_json(consent.__dict__)
    else:
        print(consent.text)
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    if args.everywhere:
        return _revoke_everywhere(args)
    targets = {"jti": args.jti, "grant_id": args.grant, "agent": args.agent,
               "subject": args.subject}
    given = {k: v for k, v in targets.items() if v}
    if len(given) + bool(args.all) != 1:
        raise UsageError("give exactly one of --jti, --grant, --agent, --subject or --all")
    before = _before_arg(args.before) if args.before else 0
    if before and args.jti:
        raise UsageError("--before goes with --grant, --agent, --subject or --all, not --jti")
    with _client(args) as client:
        at = client.revoke(**given, all=args.all, before=before, reason=args.reason)
    what = next(iter(given.values()), "all")
    out: dict[str, Any] = {"revoked": what, "revoked_at": at}
    if before:
        out["issued_before"] = before
    _print_json(out)
    return 0


def _revoke_everywhere(args: argparse.Namespace) -> int:
    """``--all --everywhere --config FILE``: the operator's kill switch, straight on Redis."""
    if not (args.all and args.config) or any((args.jti, args.grant, args.agent, args.subject)):
        raise UsageError("--everywhere goes with --all and --config FILE only")
    from remit._redis import connect
    from remit._redis_keys import RedisKeys

    from ._config import ConfigError, load_config
    from ._core import Core
    from ._errors import BadRequest, StoreDown
    from ._keystore import KeyStore
    from ._store import GrantStore

    try:
        config = load_config(Path(args.config))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    client = connect(config.redis, timeout=5.0)
    try:
        core = Core(config, KeyStore(config.keys_dir), GrantStore(client, RedisKeys(config.prefix)))
        result = core.revoke_everywhere(before=_before_arg(args.before) if args.before else 0)
    except BadRequest as exc:
        raise UsageError(str(exc)) from None
    except StoreDown as exc:
        print(f"remit: Redis unavailable: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    _print_json({"revoked": "everything", "issued_before": result.cutoff,
                 "grants": result.grants, "revoked_at": result.revoked_at})
    return 0


def _before_arg(text: str) -> int:
    """``--before``: Unix seconds, or an ISO 8601 time with a zone (``2026-03-01T12:00Z``)."""
    if text.isascii() and text.isdigit():
        return int(text)
    from datetime import datetime

    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--before: not Unix seconds or an ISO 8601 time: {text!r}") from None
    if when.tzinfo is None:
        raise UsageError("--before: give a time zone (e.g. 2026-03-01T12:00:00Z)")
    return int(when.timestamp())


# -- verify / inspect -----------------------------------------------------------------


def _cmd_verify(args: argparse.Namespace) -> int:
    call_args = _json_arg(args.args, "--args")
    if not isinstance(call_args, dict):
        raise UsageError("--args must be a JSON object")
    mode = args.revocation or ("strict" if args.redis else "off")  # one check: no feed
    if mode == "strict" and not args.redis:
        raise UsageError("--revocation strict needs --redis URL")
    if mode == "off":
        print("remit: revocation is NOT checked (--revocation off)", file=sys.stderr)
    try:
        verifier = remit.Verifier.from_jwks(
            args.jwks,
            issuer=args.issuer,
            audience=args.audience,
            revocation=mode,
            redis=args.redis,
            prefix=args.prefix,
            audit="off",  # an operator's test call is not an agent's call: not in the trail
        )
    except (remit.KeyLoadError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    with verifier:
        try:
            decision = verifier.check(
                _token_arg(args.token), action=args.action, args=call_args, proof=args.proof
            )
        except remit.Denied as denied:
            _print_json(
                {
                    "allowed": False,
                    "code": denied.code.value,
                    "message": denied.message,
                    "revocation": mode,
                }
            )
            return EXIT_DENIED
    _print_json(
        {
            "allowed": True,
            "code": None,
            "message": "allowed",
            "revocation": mode,
            "decision": decision.__class__.__name__
            and {
                "token_id": decision.token_id,
                "grant_id": decision.grant_id,
                "subject": decision.subject,
                "agent": decision.agent,
                "capability": decision.capability,
                "expires_at": decision.expires_at,
            },
        }
    )
    return 0


def _cmd_introspect(args: argparse.Namespace) -> int:
    call_args = _json_arg(args.args, "--args")
    if not isinstance(call_args, dict):
        raise UsageError("--args must be a JSON object")
    with _client(args) as client:
        found = client.introspect(
            _token_arg(args.token), audience=args.audience, action=args.action,
            args=call_args, proof=args.proof,
        )
    out: dict[str, Any] = {"allowed": found.allowed, "code": found.code or None,
                           "message": found.message or "allowed"}
    if found.allowed:
        out["decision"] = {
            "token_id": found.jti, "grant_id": found.grant_id, "subject": found.subject,
            "agent": found.agent, "capability": found.capability,
            "expires_at": found.expires_at, "anc": list(found.anc),
        }
    _print_json(out)
    return 0 if found.allowed else EXIT_DENIED


def _cmd_inspect(args: argparse.Namespace) -> int:
    try:
        header, claims = remit.peek_unverified(_token_arg(args.token))
    except ValueError as exc:
        print(f"remit: cannot decode token: {exc}", file=sys.stderr)
        return 1
    _print_json(
        {
            "verified": False,
            "warning": "decoded WITHOUT verifying the signature or any claim; do not trust",
            "header": header,
            "claims": claims,
        }
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return run_demo(redis_url=args.redis or os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))


# -- audit verify / export ---------------------------------------------------------------


def _audit_client(args: argparse.Namespace) -> Any:
    from remit._redis import connect

    try:
        return connect(args.redis, timeout=10.0)
    except ValueError as exc:
        raise UsageError(f"--redis: {exc}") from None


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    """Walk the stream; exit 0 when every writer's chain is intact, 1 on any problem."""
    import redis

    from ._audit_read import verify_stream

    if args.from_id and not _valid_stream_id(args.from_id):
        raise UsageError("--from: not a stream id (ms-seq)")
    client = _audit_client(args)
    try:
        result = verify_stream(client, f"{args.prefix}audit", args.from_id)
    except redis.RedisError as exc:
        print(f"remit: Redis: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    summary = {
        "ok": result.ok,
        "entries": result.entries,
        "writers": len(result.writers),
        "links_checked": result.checked_links,
        "problems": len(result.problems),
        "last_id": result.last_id,
    }
    if args.format == "json":
        _print_json({**summary, "details": [p.to_json() for p in result.problems]})
    else:
        for p in result.problems:
            where = f" writer {p.writer} n={p.n}" if p.writer else ""
            print(f"{p.kind.upper():<10} {p.id}{where}: {p.detail}")
        print(
            f"{'OK' if result.ok else 'PROBLEMS'}: {result.entries} entries, "
            f"{len(result.writers)} writers, {result.checked_links} links checked, "
            f"{len(result.problems)} problems"
        )
    return 0 if result.ok else 1


def _cmd_audit_export(args: argparse.Namespace) -> int:
    """JSON lines on stdout; the last id goes to stderr and, with --state, to that file,
    so the next run (same --state, or --from ID) continues after it."""
    import redis

    from ._audit_read import export_jsonl

    state = Path(args.state) if args.state else None
    start = args.from_id
    if start is None and state is not None and state.exists():
        start = state.read_text(encoding="utf-8").strip() or None
    if start is not None and not _valid_stream_id(start):
        raise UsageError(f"not a stream id (ms-seq): {start[:40]!r}")
    client = _audit_client(args)
    try:
        count, last = export_jsonl(client, f"{args.prefix}audit", sys.stdout, start)
    except redis.RedisError as exc:
        print(f"remit: Redis: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    sys.stdout.flush()
    if state is not None and last is not None:
        tmp = state.with_name(state.name + ".tmp")
        tmp.write_text(last + "\n", encoding="utf-8")
        tmp.replace(state)
    print(json.dumps({"exported": count, "last_id": last}), file=sys.stderr)
    return 0


def _valid_stream_id(text: str) -> bool:
    from ._audit_read import valid_stream_id as valid

    return valid(text)


def _audit_trail_parsers(asub: Any) -> None:
    for name, text in (
        ("verify", "check every writer's numbering and hash chain; exit 1 on any problem"),
        ("export", "entries as JSON lines (resumable: --state FILE or --from ID)"),
    ):
        ap = asub.add_parser(name, help=text)
        ap.add_argument(
            "--redis",
            default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            help="Redis URL (env REDIS_URL)",
        )
        ap.add_argument("--prefix", default="remit:", help="Redis key prefix (default remit:)")
        ap.add_argument("--from", dest="from_id", help="start after this stream id")
        if name == "verify":
            ap.add_argument("--format", choices=("text", "json"), default="text")
            ap.set_defaults(func=_cmd_audit_verify)
        else:
            ap.add_argument("--format", choices=("jsonl",), default="jsonl")
            ap.add_argument("--state", help="file holding the last exported id (read, updated)")
            ap.set_defaults(func=_cmd_audit_export)


# -- audit report ---------------------------------------------------------------------


def _cmd_audit_report(args: argparse.Namespace) -> int:
    """The action-alignment report from the audit stream (docs/audit.md)."""
    from remit._redis import connect
    from remit._redis_keys import RedisKeys

    from ._alignment import Filters, ReportError, compute, parse_since, store_lookup
    from ._report_render import render
    from ._store import GrantStore

    try:
        since = parse_since(args.since) if args.since else 0
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    filters = Filters(
        grant=args.grant or "", agent=args.agent or "", subject=args.subject or "", since_ms=since
    )
    try:
        client = connect(args.redis, timeout=10.0)
    except ValueError as exc:
        raise UsageError(f"--redis: {exc}") from None
    try:
        store = GrantStore(client, RedisKeys(args.prefix))
        report = compute(client, f"{args.prefix}audit", filters, store_lookup(store))
    except ReportError as exc:
        print(f"remit: error: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    text = render(report, args.format)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def _audit_report_parser(asub: Any) -> None:
    rp = asub.add_parser("report", help="action-alignment report: granted vs exercised authority")
    who = rp.add_mutually_exclusive_group()
    who.add_argument("--grant", help="only this grant")
    who.add_argument("--agent", help="only this agent's calls")
    who.add_argument("--subject", help="only this user's grants")
    rp.add_argument("--since", help="unix seconds, ISO 8601, or a duration back (24h, 7d)")
    rp.add_argument("--format", choices=("text", "json", "html"), default="text")
    rp.add_argument("--output", "-o", help="write to this file instead of stdout")
    rp.add_argument(
        "--redis",
        default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="Redis URL (env REDIS_URL)",
    )
    rp.add_argument("--prefix", default="remit:", help="Redis key prefix (default remit:)")
    rp.set_defaults(func=_cmd_audit_report)


# -- parser ---------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"remit: error: {message}\n")


def _app_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--target",
        default=os.environ.get("REMIT_TARGET", DEFAULT_TARGET),
        help="service host:port, or replicas as ip:port,ip:port (env REMIT_TARGET)",
    )
    p.add_argument("--api-key", help="app API key (env REMIT_API_KEY)")
    p.add_argument("--tls-ca", help="PEM CA to trust: speak TLS (env REMIT_TLS_CA)")
    p.add_argument("--tls-cert", help="PEM client certificate for mTLS (env REMIT_TLS_CERT)")
    p.add_argument("--tls-key", help="PEM key of --tls-cert (env REMIT_TLS_KEY)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="remit", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"remit {remit.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("serve", help="run the service")
    p.add_argument("--config", help="TOML config file")
    p.add_argument("--dev", action="store_true", help="dev mode: open policy, local keys")
    p.add_argument("--data-dir", help="dev mode data dir (default .remit-dev, env REMIT_DEV_DIR)")
    p.add_argument("--grpc-port", type=int)
    p.add_argument("--http-port", type=int)
    p.add_argument("--redis", help="Redis URL (dev default: REDIS_URL or 127.0.0.1:6379)")
    p.add_argument("--prefix", help="Redis key prefix (dev mode; default remit:)")
    p.add_argument("--tls-cert", help="PEM certificate (chain) of the gRPC listener")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument(
        "--tls-client-ca", help="PEM CA: require client certificates it signed (mTLS)"
    )
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("keys", help="manage issuer keys")
    ksub = p.add_subparsers(dest="keys_command", required=True, parser_class=_Parser)
    for name, text in (
        ("generate", "create the first key"),
        ("rotate", "add a new key: published at once, signing after --activate-in"),
        ("list", "list keys and their status"),
    ):
        kp = ksub.add_parser(name, help=text)
        kp.add_argument("--dir", required=True, help="keys directory")
        kp.add_argument("--max-token-ttl", type=int, default=3600)
        kp.add_argument("--margin", type=int, default=60)
        if name == "rotate":
            kp.add_argument(
                "--activate-in",
                type=float,
                default=60.0,
                help="publish the new key now, sign with it after this many seconds "
                "(default 60: longer than JWKS caches keep a copy; 0 after a compromise)",
            )
    p.set_defaults(func=_cmd_keys)

    p = sub.add_parser("agent", help="agent keys (tokens are bound to them)")
    asub = p.add_subparsers(dest="agent_command", required=True, parser_class=_Parser)
    ap = asub.add_parser("keygen", help="create an agent key file (0600); prints its thumbprint")
    ap.add_argument("--out", required=True, help="path of the new key file")
    ap = asub.add_parser("show", help="print an agent key's thumbprint and public JWK")
    ap.add_argument("key", help="agent key file")
    p.set_defaults(func=_cmd_agent)

    p = sub.add_parser("grant", help="create, get or list grants")
    gsub = p.add_subparsers(dest="grant_command", required=True, parser_class=_Parser)
    gp = gsub.add_parser("create", help="record a user's consent")
    _app_options(gp)
    gp.add_argument("--subject", required=True)
    gp.add_argument("--agent", required=True)
    gp.add_argument("--audience", action="append", required=True)
    gp.add_argument(
        "--capability",
        action="append",
        required=True,
        help='JSON: {"action": ..., "args": {...}} or a list of them',
    )
    gp.add_argument("--purpose", default="")
    gp.add_argument("--ttl", type=int, default=0, help="grant lifetime in seconds")
    gp = gsub.add_parser("get", help="show one grant")
    _app_options(gp)
    gp.add_argument("grant_id")
    gp = gsub.add_parser("list", help="list grants")
    _app_options(gp)
    gp.add_argument("--subject")
    gp.add_argument("--agent")
    gp.add_argument("--all", action="store_true", help="include revoked and expired grants")
    p.set_defaults(func=_cmd_grant)

    p = sub.add_parser("mint", help="mint a token under a grant (prints the token)")
    _app_options(p)
    p.add_argument("grant_id")
    p.add_argument("--capability", action="append", help="narrower capability JSON")
    p.add_argument("--ttl", type=int, default=0)
    p.add_argument("--audience", action="append")
    p.add_argument("--cnf-jkt", help="bind to the agent key with this RFC 7638 thumbprint")
    p.set_defaults(func=_cmd_mint)

    p = sub.add_parser(
        "exchange", help="agent: trade a key-bound token for a narrower one (prints it)"
    )
    p.add_argument(
        "--target",
        default=os.environ.get("REMIT_TARGET", DEFAULT_TARGET),
        help="service host:port (env REMIT_TARGET)",
    )
    p.add_argument("token", help="the parent token, or - to read it from stdin")
    p.add_argument("--key", required=True, help="the agent key file the token is bound to")
    p.add_argument("--capability", action="append", help="narrower capability JSON")
    p.add_argument("--ttl", type=int, default=0)
    p.add_argument("--audience", action="append")
    p.add_argument("--actor", help="sub-agent id (omit to renew for the same agent)")
    p.add_argument("--cnf-jkt", help="the sub-agent's key thumbprint (with --actor)")
    p.set_defaults(func=_cmd_exchange)

    p = sub.add_parser("describe", help="consent text for a grant or for capabilities")
    _app_options(p)
    p.add_argument("grant_id", nargs="?", help="a grant of this app")
    p.add_argument("--capabilities", help="JSON file: a capability or a list of them")
    p.add_argument("--json", action="store_true", help="print text, lines and risk as JSON")
    p.set_defaults(func=_cmd_describe)

    p = sub.add_parser(
        "revoke", help="revoke a token, a grant, or what an agent / subject / all got before T"
    )
    _app_options(p)
    p.add_argument("--jti", help="one token and every token narrowed from it")
    p.add_argument("--grant", help="a grant (with --before: only its tokens issued before)")
    p.add_argument("--agent", help="every token of the app's grants to this agent")
    p.add_argument("--subject", help="every token of the app's grants from this user")
    p.add_argument("--all", action="store_true", help="kill switch: every token of the app")
    p.add_argument("--before", help="issued before this time (Unix s or ISO 8601; default now)")
    p.add_argument(
        "--everywhere",
        action="store_true",
        help="with --all and --config FILE (operator, straight on Redis): every app's tokens, "
        "and tokens of a stolen issuer key",
    )
    p.add_argument("--config", help="the service's config file (for --everywhere)")
    p.add_argument("--reason", default="")
    p.set_defaults(func=_cmd_revoke)

    p = sub.add_parser("verify", help="verify a token for one call; exit 0 allowed, 3 denied")
    p.add_argument("token", help="the token, or - to read it from stdin")
    p.add_argument("--jwks", required=True, help="JWKS file or URL")
    p.add_argument("--issuer", required=True)
    p.add_argument("--audience", required=True)
    p.add_argument("--action", required=True)
    p.add_argument("--args", default="{}", help="the call's arguments as a JSON object")
    p.add_argument("--proof", help="the call's proof of possession (key-bound tokens)")
    p.add_argument("--revocation", choices=("off", "strict", "stream"))
    p.add_argument(
        "--redis",
        help="Redis URL (for --revocation strict or stream). With it this is a real call: a "
        "proof is used up and the capability's budgets are charged, as at a tool backend",
    )
    p.add_argument("--prefix", default="remit:")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("audit", help="the audit trail: verify, export, alignment report")
    audit_sub = p.add_subparsers(dest="audit_command", required=True, parser_class=_Parser)
    _audit_report_parser(audit_sub)
    _audit_trail_parsers(audit_sub)

    p = sub.add_parser(
        "introspect", help="ask the service to check one call; exit 0 allowed, 3 denied"
    )
    _app_options(p)
    p.add_argument("token", help="the token, or - to read it from stdin")
    p.add_argument("--audience", required=True, help="the backend the call is for")
    p.add_argument("--action", required=True)
    p.add_argument("--args", default="{}", help="the call's arguments as a JSON object")
    p.add_argument("--proof", help="the call's proof of possession (key-bound tokens)")
    p.set_defaults(func=_cmd_introspect)

    p = sub.add_parser("inspect", help="decode a token WITHOUT verifying it")
    p.add_argument("token", help="the token, or - to read it from stdin")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("demo", help="run the end-to-end demo")
    p.add_argument("--redis", help="Redis URL (default: REDIS_URL or 127.0.0.1:6379)")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except UsageError as exc:
        print(f"remit: error: {exc}", file=sys.stderr)
        return 2
    except remit.ServiceError as exc:
        field = f" (field: {exc.field})" if exc.field else ""
        print(f"remit: {type(exc).__name__}: {exc.message}{field}", file=sys.stderr)
        return 1
    return code
