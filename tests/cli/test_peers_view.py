"""The peers table: what each column shows, unknown values, alignment and order."""

from __future__ import annotations

from meshnode.cli.peers_view import format_dropped, format_peer_table, short_peer_id

from ..api.conftest import PEER_A, PEER_B, sample_peer


def test_an_empty_table_is_one_line() -> None:
    assert format_peer_table([]) == "no peers yet"


def test_a_peer_row() -> None:
    header, row = format_peer_table([sample_peer()]).splitlines()
    assert header.split() == [
        "PEER", "STATE", "ADDRESS", "SLOTS", "IDLE", "LOAD", "FREE", "MEM", "RTT", "LAST", "SEEN", "AGREE/DISAGREE/FAIL",
    ]  # fmt: skip
    assert row.split() == [
        f"12D3KooW…{PEER_B[-6:]}",
        "alive",
        "/ip4/10.0.0.2/tcp/7350",
        "2",
        "1",
        "0.25",
        "3.2", "GiB",
        "0.7", "ms",
        "1.2", "s", "ago",
        "7/0/1",
    ]  # fmt: skip


def test_unknown_values_show_as_dashes() -> None:
    peer = {key: None for key in sample_peer()} | {"peer_id": PEER_A, "addrs": []}
    row = format_peer_table([peer]).splitlines()[1]
    assert row.split() == [short_peer_id(PEER_A)] + ["-"] * 9


def test_columns_line_up() -> None:
    peers = [
        sample_peer(),
        sample_peer(peer_id=PEER_A, addrs=["/ip6/fe80::1/tcp/7350"], slots=16, idle=12, load1=11.5,
                    mem_free=700 << 20, rtt_ms=123.4, last_seen_s=95, state="stale"),
    ]  # fmt: skip
    lines = format_peer_table(peers).splitlines()
    assert len(lines) == 3
    # every header starts where its left-aligned values start, or ends where its right-aligned values end
    header = lines[0]
    for line in lines[1:]:
        for name in ("STATE", "ADDRESS"):
            start = header.index(name)
            assert line[start - 2 : start] == "  " and line[start] != " "
        for name in ("SLOTS", "IDLE", "LOAD", "FREE MEM", "RTT", "LAST SEEN"):
            end = header.index(name) + len(name)
            assert line[end - 1] != " " and (end == len(line) or line[end] == " ")
    assert "700 MiB" in lines[2] and "123 ms" in lines[2] and "1 min ago" in lines[2] and "11.50" in lines[2]


def test_alive_peers_come_first() -> None:
    peers = [sample_peer(state="gone", peer_id=PEER_A), sample_peer(state="alive", peer_id=PEER_B)]
    rows = format_peer_table(peers).splitlines()[1:]
    assert [row.split()[1] for row in rows] == ["alive", "gone"]


def test_short_peer_id() -> None:
    assert short_peer_id(PEER_A) == f"12D3KooW…{PEER_A[-6:]}"
    assert short_peer_id("short") == "short"


def test_no_trailing_spaces() -> None:
    text = format_peer_table([sample_peer(), sample_peer(peer_id=PEER_A, last_seen_s=None)])
    assert all(line == line.rstrip() for line in text.splitlines())


def test_a_barred_peer_is_marked() -> None:
    peer = sample_peer(reputation={"agreements": 1, "disagreements": 2, "failures": 0, "score": 0.1, "barred": True})
    assert format_peer_table([peer]).splitlines()[1].endswith("1/2/0 barred")


def test_dropped_messages_are_one_line_most_frequent_first() -> None:
    assert format_dropped({"old_seq": 1, "jobs_malformed": 3, "blob_empty": 1, "none": 0}) == (
        "dropped messages: jobs_malformed 3, blob_empty 1, old_seq 1"
    )
    assert format_dropped({}) is None and format_dropped(None) is None and format_dropped({"x": 0}) is None
