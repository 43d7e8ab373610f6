# SPDX-License-Identifier: BSD-3-Clause
"""RoCE v2 frames built here, independently of the xdp provider (tests write
them to a device from a raw socket), and the raw socket that writes them."""
import struct
import subprocess
import sys
import zlib


def roce_frame(src_mac, dst_mac, sgid, dgid, dqpn, sqpn, qkey, payload, corrupt_icrc=False):
    """A RoCE v2 UD SEND over IPv6 built here, independently of the provider: Ethernet, IPv6, UDP
    to 4791, BTH, DETH, payload (padded to 4), ICRC = CRC-32 over 8 bytes of ones and the packet
    with its variant fields set to ones, least significant byte first (IBA Annex A17.3.3)."""
    pad = -len(payload) % 4
    bth = struct.pack(">BBHII", 0x64, pad << 4, 0xFFFF, dqpn & 0xFFFFFF, 7)
    deth = struct.pack(">II", qkey, sqpn & 0xFFFFFF)
    body = bth + deth + payload + bytes(pad)
    udp_len = 8 + len(body) + 4
    ip6 = struct.pack(">IHBB", 6 << 28, udp_len, 17, 64) + sgid + dgid
    udp = struct.pack(">HHHH", 0xC001, 4791, udp_len, 0)
    masked = bytes([ip6[0] | 0x0F, 0xFF, 0xFF, 0xFF]) + ip6[4:7] + b"\xff" + ip6[8:] + udp[:6] + b"\xff\xff" + \
        body[:4] + b"\xff" + body[5:]
    icrc = zlib.crc32(masked, zlib.crc32(b"\xff" * 8)) ^ (1 if corrupt_icrc else 0)
    return dst_mac + src_mac + b"\x86\xdd" + ip6 + udp + body + struct.pack("<I", icrc)


def send_raw(netns, dev, frames):
    """Write Ethernet frames (bytes) to dev from an AF_PACKET socket, in network namespace netns
    (None: this one)."""
    code = ("import socket,sys;s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW);s.bind((sys.argv[1],0));"
            "[s.send(bytes.fromhex(f)) for f in sys.argv[2:]]")
    subprocess.run((["ip", "netns", "exec", netns] if netns else []) + [sys.executable, "-c", code, dev] +
                   [f.hex() for f in frames], check=True)
