"""``trainguard ledger ...``: the tamper-evident provenance ledger.

Every verb takes ``--ledger URL`` (else ``$TRAINGUARD_LEDGER``, else a SQLite
file under the user's data directory). Human output goes to stderr, machine
output (``--json``...) to stdout. Exit codes: 0 clean, 1 a failed
verification or an affected run / unknown provenance, 2 an error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainguard.cli._output import add_output_options, emit
from trainguard.cli._progress import Progress
from trainguard.errors import UsageError

HELP = "tamper-evident provenance of runs and checkpoints: verify, blast radius, lineage"


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--ledger",
        metavar="URL",
        help="sqlite:///PATH or postgresql://USER@HOST/DB[?schema=NAME] "
        "(default: $TRAINGUARD_LEDGER, else a SQLite file under the user data dir)",
    )
    return common


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="write JSON to stdout")


def _keys_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--public-key",
        action="append",
        default=[],
        metavar="PEM",
        help="a trusted Ed25519 public key (repeatable); signatures by other keys fail",
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("ledger", help=HELP, description=HELP)
    verbs = parser.add_subparsers(dest="ledger_command", metavar="VERB")
    verbs.required = True
    common = [_common()]

    p = verbs.add_parser("init", parents=common, help="create the ledger (idempotent)")
    p.add_argument("--origin", help="the log's name in signed tree heads (default: random)")
    _json_flag(p)
    p.set_defaults(func=_init)

    p = verbs.add_parser("keygen", help="create an Ed25519 signing key pair (PEM files)")
    p.add_argument("--out", required=True, metavar="PEM", help="private key file (written 0600)")
    p.add_argument("--public", metavar="PEM", help="public key file (default: OUT.pub)")
    p.set_defaults(func=_keygen)

    p = verbs.add_parser("sign", parents=common, help="sign the current tree head and store it")
    p.add_argument("--key", required=True, metavar="PEM", help="Ed25519 private key")
    _json_flag(p)
    p.set_defaults(func=_sign)

    p = verbs.add_parser(
        "head", parents=common, help="show the current and latest signed tree heads"
    )
    p.add_argument(
        "--save", metavar="FILE", help="save the latest signed head (for verify --since)"
    )
    _json_flag(p)
    p.set_defaults(func=_head)

    p = verbs.add_parser(
        "verify", parents=common, help="recompute the log, tree, signed heads and indexes"
    )
    _keys_flag(p)
    p.add_argument(
        "--since",
        action="append",
        default=[],
        metavar="HEAD.json",
        help="a previously seen signed head (repeatable): catches truncation and rewrites",
    )
    p.add_argument(
        "--require-signed", action="store_true", help="fail unless every entry is signed"
    )
    p.add_argument("--no-derived", action="store_true", help="skip the derived-table comparison")
    p.add_argument("--jobs", type=int, metavar="N", help="worker processes (default: CPU count)")
    p.add_argument("--save-head", metavar="FILE", help="after success, save the latest signed head")
    _json_flag(p)
    p.set_defaults(func=_verify)

    p = verbs.add_parser(
        "blast-radius",
        parents=common,
        help="what an indicator affected: runs, artifacts, GPU-hours, cost",
    )
    g = p.add_argument_group("indicators (combined as a union; a window restricts the others)")
    g.add_argument(
        "--artifact", action="append", default=[], metavar="DIGEST", help="content digest"
    )
    g.add_argument(
        "--file-hash",
        action="append",
        default=[],
        metavar="DIGEST",
        help="tampered file digest (env verify)",
    )
    g.add_argument("--env-baseline", action="append", default=[], metavar="DIGEST")
    g.add_argument("--user", action="append", default=[])
    g.add_argument("--host", action="append", default=[])
    g.add_argument("--run", action="append", default=[], metavar="RUN_ID")
    g.add_argument("--since", metavar="TIME", help="ISO 8601 or Unix seconds")
    g.add_argument("--until", metavar="TIME", help="ISO 8601 or Unix seconds")
    p.add_argument("--prices", metavar="FILE", help="JSON/TOML price table per accelerator-hour")
    p.add_argument("--as-of", metavar="TIME", help="'now' for runs still going (default: now)")
    p.add_argument(
        "--max-clean", type=int, default=50, metavar="N", help="clean runs listed (default 50)"
    )
    p.add_argument(
        "--max-depth", type=int, metavar="N", help="derivation hops to follow (default: all)"
    )
    p.add_argument(
        "--from-log", action="store_true", help="ignore the derived tables; read the log"
    )
    p.add_argument("--verify", action="store_true", help="run a full `ledger verify` first")
    _keys_flag(p)
    _json_flag(p)
    p.add_argument("--html", metavar="FILE", help="also write the HTML report to FILE")
    p.add_argument("--output", "-o", metavar="FILE", help="write the JSON report to FILE")
    p.add_argument("--quiet", "-q", action="store_true", help="no human report on stderr")
    p.set_defaults(func=_blast)

    p = verbs.add_parser(
        "lineage", parents=common, help="draw where an artifact came from and went"
    )
    p.add_argument("subject", metavar="DIGEST_OR_RUN", help="a content digest or a run id")
    p.add_argument("--format", choices=("text", "json", "dot", "mermaid"), default="text")
    direction = p.add_mutually_exclusive_group()
    direction.add_argument("--up", action="store_true", help="upstream only")
    direction.add_argument("--down", action="store_true", help="downstream only")
    p.add_argument("--max-nodes", type=int, default=500, metavar="N")
    p.add_argument("--max-depth", type=int, metavar="N")
    p.set_defaults(func=_lineage)

    p = verbs.add_parser(
        "check-report", help="re-check a blast-radius JSON report offline (signature, proofs)"
    )
    p.add_argument("report", metavar="REPORT.json")
    _keys_flag(p)
    p.add_argument("--require-signed", action="store_true")
    p.set_defaults(func=_check_report)

    p = verbs.add_parser(
        "provenance", parents=common, help="which recorded run produced these files"
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    add_output_options(p)
    p.set_defaults(func=_provenance)

    p = verbs.add_parser(
        "register", parents=common, help="vouch for external files (base models, data)"
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--kind", default="model", help="artifact kind (default: model)")
    _json_flag(p)
    p.set_defaults(func=_register)

    p = verbs.add_parser(
        "maintain",
        parents=common,
        help="rebuild missing indexes, refresh planner statistics (after bulk imports)",
    )
    p.set_defaults(func=_maintain)

    p = verbs.add_parser("hash", help="print content digests as the ledger computes them")
    p.add_argument("paths", nargs="+", metavar="FILE")
    p.set_defaults(func=_hash)

    p = verbs.add_parser("show", parents=common, help="print entries with their inclusion proofs")
    p.add_argument("indexes", nargs="+", type=int, metavar="INDEX")
    p.set_defaults(func=_show)

    p = verbs.add_parser(
        "append", parents=common, help="append records from JSON (one per line, or a list)"
    )
    p.add_argument("file", metavar="FILE", help="a JSON file, or - for stdin")
    p.add_argument(
        "--bulk",
        action="store_true",
        help="import a large JSON-lines file: every line is checked first, then appended in"
        " atomic batches with the query indexes rebuilt once (50k+ entries/s)",
    )
    p.add_argument(
        "--batch", type=int, default=20_000, metavar="N", help="entries per batch with --bulk"
    )
    _json_flag(p)
    p.set_defaults(func=_append)

    p = verbs.add_parser(
        "export", parents=common, help="OpenLineage events or a model-signing manifest"
    )
    what = p.add_subparsers(dest="export_format", metavar="FORMAT")
    what.required = True
    e = what.add_parser("openlineage", parents=common, help="OpenLineage 2-0-2 run events (NDJSON)")
    e.add_argument(
        "--run", action="append", metavar="RUN_ID", help="only these runs (default: all)"
    )
    e.add_argument("--output", "-o", metavar="FILE")
    e.set_defaults(func=_export_openlineage)
    e = what.add_parser("model-signing", help="an OpenSSF model-signing v1.0 in-toto statement")
    e.add_argument("path", metavar="MODEL")
    e.add_argument("--method", choices=("shards", "files"), default="shards")
    e.add_argument("--name", help="model name in the subject")
    e.add_argument("--output", "-o", metavar="FILE")
    e.set_defaults(func=_export_model_signing)


# -- helpers -----------------------------------------------------------------------


def _open(args: argparse.Namespace, *, create: bool = False) -> Any:
    from trainguard.ledger import Ledger

    return Ledger.open(args.ledger, create=create)


def _out(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")


def _time(text: str | None, flag: str) -> int | None:
    """ISO 8601 (date, or date-time in UTC) or Unix seconds."""
    from trainguard.ledger._blast_types import parse_time

    return None if text is None else parse_time(text, flag)


def _keys(paths: list[str]) -> list[Any]:
    from trainguard.ledger import PublicKey

    return [PublicKey.from_file(p) for p in paths]


def _heads(paths: list[str]) -> list[Any]:
    from trainguard.ledger import SignedTreeHead

    out = []
    for p in paths:
        try:
            out.append(SignedTreeHead.from_json(json.loads(Path(p).read_text(encoding="utf-8"))))
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"cannot read tree head {p}: {exc}", subject=p) from exc
    return out


# -- verbs -------------------------------------------------------------------------


def _init(args: argparse.Namespace) -> int:
    from trainguard.ledger import Ledger

    with Ledger.open(args.ledger, create=True, origin=args.origin) as ledger:
        info = {"url": ledger.url.text, "origin": ledger.origin, "size": ledger.size()}
    if args.json:
        _out(info)
    _say(f"ledger ready at {info['url']} (origin {info['origin']}, {info['size']} entries)")
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from trainguard.ledger import SigningKey

    key = SigningKey.generate()
    key.save(args.out)
    public = Path(args.public or f"{args.out}.pub")
    public.write_bytes(key.public_key.to_pem())
    _say(
        f"private key {args.out} (keep it off the cluster), public key {public}, key id {key.public_key.key_id}"
    )
    return 0


def _sign(args: argparse.Namespace) -> int:
    from trainguard.ledger import SigningKey

    key = SigningKey.from_file(args.key)
    with _open(args) as ledger:
        head = ledger.sign(key)
    if args.json:
        _out(head.to_json())
    _say(f"signed tree head: size {head.size}, root {head.root.hex()}, key {head.key_id}")
    return 0


def _head(args: argparse.Namespace) -> int:
    with _open(args) as ledger:
        head = ledger.head()
        signed = ledger.latest_signed_head()
        origin = ledger.origin
    if args.save:
        if signed is None:
            raise UsageError(
                "no signed tree head to save", hint="run `trainguard ledger sign --key KEY`"
            )
        Path(args.save).write_text(json.dumps(signed.to_json(), indent=2) + "\n", encoding="utf-8")
    info = {
        "origin": origin,
        "size": head.size,
        "root": head.root.hex(),
        "signed": signed.to_json() if signed else None,
    }
    if args.json:
        _out(info)
    _say(f"{origin}: {head.size} entries, root {head.root.hex()}")
    _say(
        f"latest signed head: size {signed.size}, key {signed.key_id}"
        if signed
        else "no signed tree head"
    )
    return 0


def _verify(args: argparse.Namespace) -> int:
    from trainguard.ledger import verify_ledger

    with _open(args) as ledger:
        result = verify_ledger(
            ledger,
            trusted_keys=_keys(args.public_key),
            known_heads=_heads(args.since),
            require_signed=args.require_signed,
            derived=not args.no_derived,
            jobs=args.jobs,
        )
        latest = ledger.latest_signed_head()
    if args.save_head and latest is not None:
        Path(args.save_head).write_text(
            json.dumps(latest.to_json(), indent=2) + "\n", encoding="utf-8"
        )
    if args.json:
        _out(result.to_json())
    rate = result.size / result.seconds if result.seconds else 0
    _say(
        f"ledger OK: {result.size} entries, {result.derived_rows} index rows, "
        f"{result.heads_checked} signed heads, root {result.root.hex()} "
        f"({result.seconds:.2f} s, {rate:,.0f} entries/s, {result.jobs} jobs)"
    )
    for caveat in result.caveats:
        _say(f"  note: {caveat}")
    if not result.compiled:
        _say(
            "  note: checked in pure Python (trainguard's C extension is not built here;"
            " with a C compiler and OpenSSL headers, reinstall for ~1.5x the speed)"
        )
    return 0


def _blast(args: argparse.Namespace) -> int:
    from trainguard.ledger import verify_ledger
    from trainguard.ledger._blast_text import render_blast_text
    from trainguard.ledger._html import render_blast_html
    from trainguard.ledger.blast import Indicator, PriceTable, blast_radius

    indicator = Indicator(
        artifacts=tuple(args.artifact),
        files=tuple(args.file_hash),
        env_baselines=tuple(args.env_baseline),
        users=tuple(args.user),
        hosts=tuple(args.host),
        runs=tuple(args.run),
        since=_time(args.since, "--since"),
        until=_time(args.until, "--until"),
    )
    prices = PriceTable.load(args.prices) if args.prices else None
    with _open(args) as ledger:
        if args.verify:
            verify_ledger(ledger, trusted_keys=_keys(args.public_key))
        result = blast_radius(
            ledger,
            indicator,
            prices=prices,
            as_of=_time(args.as_of, "--as-of"),
            max_clean=args.max_clean,
            max_depth=args.max_depth,
            from_log=args.from_log,
        )
    report = result.to_json()
    if args.public_key:
        from trainguard.ledger._evidence import verify_evidence

        verify_evidence(report, _keys(args.public_key))
    text = json.dumps(report, indent=2, sort_keys=True) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    elif args.json:
        sys.stdout.write(text)
    if args.html:
        Path(args.html).write_text(render_blast_html(report), encoding="utf-8")
    if not args.quiet:
        sys.stderr.write(render_blast_text(report))
    return 1 if result.affected_runs else 0


def _lineage(args: argparse.Namespace) -> int:
    from trainguard.ledger.lineage import lineage

    with _open(args) as ledger:
        graph = lineage(
            ledger,
            args.subject,
            up=not args.down,
            down=not args.up,
            max_nodes=args.max_nodes,
            max_depth=args.max_depth,
        )
    if args.format == "json":
        _out(graph.to_json())
    else:
        render = {"text": graph.to_text, "dot": graph.to_dot, "mermaid": graph.to_mermaid}[
            args.format
        ]
        sys.stdout.write(render())
    return 0


def _check_report(args: argparse.Namespace) -> int:
    from trainguard.ledger._evidence import verify_evidence

    try:
        report = json.loads(Path(args.report).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read report: {exc}", subject=args.report) from exc
    keys = _keys(args.public_key)
    n = verify_evidence(report, keys, require_signed=args.require_signed)
    signed = (
        "signature checked"
        if keys and report["evidence"].get("signed_tree_head")
        else "signature NOT checked"
    )
    _say(f"report OK: {n} cited entries proven in the tree head; {signed}")
    return 0


def _provenance(args: argparse.Namespace) -> int:
    from trainguard.ledger.capture import provenance_report

    with _open(args) as ledger:
        report = provenance_report(ledger, args.paths)
    return emit(report, args)


def _register(args: argparse.Namespace) -> int:
    from trainguard.ledger import Artifact
    from trainguard.ledger.capture import digest_file

    records = []
    for path in args.paths:
        digest, size = digest_file(path)
        records.append(Artifact(digest, args.kind, int(time.time()), size, Path(path).name))
    with _open(args, create=True) as ledger:
        result = ledger.append(records)
    if args.json:
        _out({"first": result.first, "size": result.size, "digests": [r.digest for r in records]})
    for path, r in zip(args.paths, records, strict=True):
        _say(f"registered {path} as {r.artifact_kind} {r.digest}")
    return 0


def _maintain(args: argparse.Namespace) -> int:
    with _open(args) as ledger:
        started = time.perf_counter()
        ledger.storage.maintain()
    _say(f"ledger maintained ({time.perf_counter() - started:.1f} s)")
    return 0


def _hash(args: argparse.Namespace) -> int:
    from trainguard.ledger.capture import digest_file

    for path in args.paths:
        digest, _ = digest_file(path)
        sys.stdout.write(f"{digest}  {path}\n")
    return 0


def _show(args: argparse.Namespace) -> int:
    with _open(args) as ledger:
        size = ledger.size()
        proofs = ledger.inclusion_proofs(args.indexes, size)
        out = [
            {
                "index": e.index,
                "entry": json.loads(e.data),
                "proof": proofs[e.index].to_json(),
            }
            for i in args.indexes
            for e in [ledger.entry(i)]
        ]
        root = ledger.root_at(size).hex()
    _out({"tree_head": {"size": size, "root": root}, "entries": out})
    return 0


_NOTHING_APPENDED = "nothing was appended: fix the line and run again"
_CHANGED = (
    "the file changed after it was checked: the batches before this line were appended"
    " (see `trainguard ledger head`); append the rest from a fixed file"
)


def _bulk_records(path: str, hint: str = _NOTHING_APPENDED) -> Iterator[tuple[int, Any]]:
    """``(line number, record)`` of each record in a JSON-lines file, streamed."""
    from trainguard.ledger.records import record_from_json

    try:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                    if not isinstance(item, dict):
                        raise UsageError("a record is a JSON object")
                    yield number, record_from_json({"v": 1, **item})
                except (json.JSONDecodeError, UsageError) as exc:
                    message = exc.message if isinstance(exc, UsageError) else f"not JSON: {exc}"
                    raise UsageError(
                        f"line {number}: {message}",
                        subject=path,
                        hint=hint,
                    ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}", subject=path) from exc


def _append_bulk(args: argparse.Namespace) -> int:
    if args.file == "-":
        raise UsageError(
            "--bulk reads its file twice (every line checked, then appended): give a file",
            subject="-",
        )
    if args.batch < 1:
        raise UsageError("--batch must be at least 1", subject=str(args.batch))
    total = sum(1 for _ in _bulk_records(args.file))  # every line checked before any append
    if not total:
        raise UsageError("nothing to append", subject=args.file)
    progress = Progress("appending")
    started = time.perf_counter()

    def records() -> Iterator[Any]:
        for index, (_, record) in enumerate(_bulk_records(args.file, _CHANGED)):
            progress(index, total, Path(args.file))
            yield record

    with _open(args, create=True) as ledger:
        before = ledger.size()
        try:
            result = ledger.bulk_append(records(), batch=args.batch)
        finally:
            progress.done()
    added = result.size - before
    seconds = time.perf_counter() - started
    if args.json:
        _out(
            {
                "first": before,
                "size": result.size,
                "root": result.root.hex(),
                "appended": added,
                "seconds": round(seconds, 3),
            }
        )
    _say(
        f"appended {added:,} entries at {before}..{result.size - 1}"
        f" ({seconds:.1f} s, {added / seconds if seconds else 0:,.0f} entries/s)"
    )
    return 0


def _append(args: argparse.Namespace) -> int:
    from trainguard.ledger.records import record_from_json

    if args.bulk:
        return _append_bulk(args)
    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    try:
        stripped = text.strip()
        items = (
            json.loads(stripped)
            if stripped.startswith("[")
            else [json.loads(line) for line in stripped.splitlines() if line.strip()]
        )
    except json.JSONDecodeError as exc:
        raise UsageError(f"not JSON: {exc}", subject=args.file) from exc
    records = [record_from_json({"v": 1, **item}) for item in items]
    with _open(args, create=True) as ledger:
        result = ledger.append(records)
    if args.json:
        _out({"first": result.first, "size": result.size, "root": result.root.hex()})
    _say(f"appended {len(records)} entries at {result.first}..{result.size - 1}")
    return 0


def _export_openlineage(args: argparse.Namespace) -> int:
    from trainguard.ledger.export import openlineage_events

    with _open(args) as ledger:
        events = openlineage_events(ledger, args.run)
    text = "".join(json.dumps(e, sort_keys=True) + "\n" for e in events)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    _say(f"{len(events)} OpenLineage run events")
    return 0


def _export_model_signing(args: argparse.Namespace) -> int:
    from trainguard.ledger.export import model_signing_statement

    statement = model_signing_statement(args.path, name=args.name, method=args.method)
    text = json.dumps(statement, indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    _say(
        f"model-signing statement for {len(statement['predicate']['resources'])} resources, "
        f"subject digest {statement['subject'][0]['digest']['sha256']}"
    )
    return 0
