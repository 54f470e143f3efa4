"""What the client commands print for a person: state events, the status and the voices as text.

``--json`` prints the service's replies as they are; these are the tables and lines otherwise.
"""

from __future__ import annotations

from typing import Any

from statemachine import StateEvent


def format_event(event: StateEvent) -> str:
    line = f"{event.at}  {event.backend:<10} {event.to_state.value:<11} {event.reason.value}"
    if event.progress and event.progress.total:
        frac = event.progress.fraction or 0.0
        bar = "#" * int(frac * 30)
        line += f"  [{bar:<30}] {event.progress.done / 2**20:.1f}/{event.progress.total / 2**20:.1f} MiB"
    if event.message:
        line += f"  {event.message}"
    if event.fix:
        line += f"\n{'':<26}fix: {event.fix}"
    return line


def print_status(status: dict[str, Any]) -> None:
    print(f"instance {status['instance']} (answering)")
    for b in status["backends"]:
        langs = ",".join(b["languages"]) or "-"
        print(f"  {b['name']:<11} {b['state']:<11} {b['reason']:<18} languages={langs}")
        if b.get("fix"):
            print(f"  {'':<11} fix: {b['fix']}")
    fleet = status.get("fleet")
    if not fleet:
        return
    print(f"fleet: {len(fleet['instances'])} instance(s)" + (f"  ({fleet['error']})" if fleet.get("error") else ""))
    for name, summary in fleet["backends"].items():
        where = f"loaded on {', '.join(summary['loaded'])}" if summary["loaded"] else "not loaded on any instance"
        print(f"  {name:<11} {where}")
        for failed in summary["failed"]:
            print(
                f"  {'':<11} failed on {failed['instance']}: {failed['reason']}"
                + (f"; fix: {failed['fix']}" if failed["fix"] else "")
            )
        for other in summary["other"]:
            print(f"  {'':<11} {other['state']} on {other['instance']} ({other['reason']})")


def print_voices(voices: dict[str, Any]) -> None:
    """One row per voice: backend, its state, language, voice id (what ``say --voice`` takes), description."""
    rows = [("BACKEND", "STATE", "LANGUAGE", "VOICE", "DESCRIPTION")]
    for backend, entry in voices["backends"].items():
        listed = [(lang, v) for lang, offered in entry["languages"].items() for v in offered]
        rows += [(backend, entry["state"], lang, v["id"], v.get("description") or "") for lang, v in listed]
        if not listed:
            rows.append((backend, entry["state"], "-", "-", "no voices offered"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[4])
    if "profiles" in voices:
        print_profiles(voices["profiles"])


def print_profiles(report: dict[str, Any]) -> None:
    """Cloned voices: how many, and each made without a consent record (before consents, or with the rule off)."""
    if "error" in report:
        print(f"\nvoice profiles: unknown ({report['error'].get('message')})")
        return
    unconsented = report["unconsented"]
    print(f"\nvoice profiles: {report['total']} ({report['consented']} with a consent, {len(unconsented)} without)")
    for profile in unconsented:
        print(f"  {profile['id']:<12} created {profile['created_at'] or '?'}  unconsented")
