import socket
from pathlib import Path

import pytest

from edge.tools import net


def test_free_ports_are_distinct_bindable_and_below_the_range_outgoing_connections_take() -> None:
    """A server given one of these ports can bind it even while the test opens connections: their own ends are
    drawn from the kernel's ephemeral range, which the ports stay below."""
    low = net._ephemeral_low()
    ports = [net.free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(low - net.BELOW_EPHEMERAL <= p < low for p in ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[0]))


def test_without_room_below_the_range_the_kernel_chooses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "range").write_text("1024\t65535\n")
    monkeypatch.setattr(net, "EPHEMERAL_RANGE", tmp_path / "range")
    ports = [net.free_port() for _ in range(20)]
    assert len(set(ports)) == 20 and all(1024 <= p <= 65535 for p in ports)
    monkeypatch.setattr(net, "EPHEMERAL_RANGE", tmp_path / "missing")
    assert net._ephemeral_low() == 32768
