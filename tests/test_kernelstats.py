"""Reading the kernel's UDP drop counters: the files' layout, and the real files of this machine."""

from __future__ import annotations

import socket

from mondemand.kernelstats import KernelDrops, socket_drops, udp_counters

SNMP = """Ip: Forwarding DefaultTTL
Ip: 1 64
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 100 1 7 90 5 0 0 0 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
UdpLite: 0 0 0 0 0 0 0 0 0
"""
SNMP6 = "Udp6InDatagrams                 \t2\nUdp6RcvbufErrors                \t3\nUdp6InErrors \t4\n"
HEADER = "sl local_address rem_address st tx_queue rx_queue tr tm->when retrnsmt uid timeout inode ref pointer drops"
ROW = "{sl}: 0100007F:{port} 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 {inode} 2 365897ae {drops}"
UDP = "\n".join([HEADER, ROW.format(sl=199, port="8985", inode=25825, drops=12),
                 ROW.format(sl=7647, port="E69D", inode=25823, drops=0)]) + "\n"


def write(tmp_path, snmp=SNMP, snmp6=SNMP6, udp=UDP):
    (tmp_path / "snmp").write_text(snmp)
    (tmp_path / "snmp6").write_text(snmp6)
    (tmp_path / "udp").write_text(udp)
    return tmp_path


def test_counters_are_read_by_name_not_position(tmp_path):
    values = udp_counters(write(tmp_path))
    assert values["RcvbufErrors"] == 5 and values["InErrors"] == 7 and values["udp6_RcvbufErrors"] == 3
    assert "UdpLite" not in str(values)


def test_per_socket_drops_by_inode(tmp_path):
    assert socket_drops({25825, 1}, write(tmp_path)) == {25825: 12}


def test_deltas_since_start_and_missing_files_read_as_zero(tmp_path):
    proc = write(tmp_path)
    drops = KernelDrops(proc)
    write(tmp_path, SNMP.replace("100 1 7 90 5", "200 1 9 90 45"), SNMP6.replace("\t3", "\t5"))
    assert drops.read()["rcvbuf_errors"] == 42 and drops.read()["in_errors"] == 2
    assert KernelDrops(tmp_path / "nowhere").read() == {"rcvbuf_errors": 0, "in_errors": 0, "listeners": {}}


def test_the_real_files_find_a_real_socket():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))

        class Listener:
            def sockets(self):
                return [sock]

        drops = KernelDrops()
        drops.watch({"l": Listener()})
        assert drops.read()["listeners"] == {"l": 0}
        assert "RcvbufErrors" in udp_counters()
