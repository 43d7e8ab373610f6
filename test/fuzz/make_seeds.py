#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Write seed corpora for the fuzz targets into DIR/<target>/.

Wire formats: the known-answer vectors of the unit tests (Linux captures and
their IPoIB forms), prefixed with the control bytes each target expects.
rx_slot: receive slots of the software HCA as a correct sender leaves them.
sa_answer: SA answers (PathRecord, MCMemberRecord, a GetTable of many records)
to the requests fuzz_sa_answer has pending, and the kernel handing a request
back. smp_answer: PortInfo (ACTIVE, INIT, DOWN), NodeInfo and a P_KeyTable
block as OpenSM leaves an HCA on ibsim."""
import os
import struct
import sys


def rx_slot(lap, kind, owner=2, byte_len=140, src_qp=0x1234, slid=5, sl=3, flags=1, status=0,
            seg_key=0x01000001, offset=0, length=4136, posted_len=4136, seg_size=1 << 20, msg_len=100):
    """An RqSlot image (state, seg_key, offset, length, byte_len, src_qp, slid, pkey_index, sl, flags,
    status, pad), then the receiver's lap, its posted length, the sender's segment size, message length."""
    state = lap << 32 | owner << 8 | kind
    slot = struct.pack("<QIIIIIHHBBB5x", state, seg_key, offset, length, byte_len, src_qp, slid, 0, sl, flags,
                       status)
    return slot + struct.pack("<IIII", lap, posted_len, seg_size, msg_len)

def gid(text):
    import ipaddress
    return ipaddress.IPv6Address(text).packed


def path_record(dlid=2, slid=1, pkey=0xffff, mtu=4, rate=3):
    """PathRecord (IBA 15.2.5.16): DGID, SGID, LIDs, Reversible, P_Key, MTU/rate/life with selector 2."""
    r = bytearray(64)
    r[8:24] = gid("fe80::2:c903:0:202")
    r[24:40] = gid("fe80::2:c903:0:101")
    r[40:44] = struct.pack(">HH", dlid, slid)
    r[49] = 0x80 | 1
    r[50:52] = struct.pack(">H", pkey)
    r[54], r[55], r[56] = 0x80 | mtu, 0x80 | rate, 0x80 | 18
    return bytes(r)


def mcm_record(mlid=0xc001, mtu=4, join_state=1):
    """MCMemberRecord (IBA 15.2.5.17), 56 bytes: the IPv4 broadcast group of P_Key 0xffff."""
    return (gid("ff12:401b:ffff::ffff:ffff") + gid("fe80::2:c903:0:101") +
            struct.pack(">IHBBHBBIBB6x", 0x0b1b, mlid, 0x80 | mtu, 0, 0xffff, 0x80 | 3, 0x80 | 18, 0,
                        2 << 4 | join_state, 0))


def sa_mad(method, attr, record=b"", status=0, attr_offset=0):
    """An SA MAD: common header (TID 0: the target puts a pending one in), RMPP and SA headers, data."""
    hdr = struct.pack(">BBBBHHQHHI", 1, 3, 2, method, status, 0, 0, attr, 0, 0)
    sa = bytes(12) + struct.pack(">QHHQ", 0, attr_offset, 0, 0)
    return (hdr + sa + record).ljust(256, b"\0")


def sa_msg(kind, back, mad, poll=True, keep=True, fix=True, status=None, mode=0, larg=0, tid=0):
    """One message of fuzz_sa_answer's input (see its header): op, mode, larg, ustatus, tid, body."""
    op = kind | back << 2 | (0x10 if keep else 0) | (0x20 if fix else 0) | (0x40 if status is not None else 0)
    op |= 0x80 if poll else 0
    return struct.pack("<BBHBQH", op, mode, larg, status or 0, tid, len(mad)) + mad


# fuzz_sa_answer's pending requests, oldest first: path (back 3), join (2), leave (1), table (0).
PATH_ANSWER = sa_msg(0, 3, sa_mad(0x81, 0x35, path_record()))
JOIN_ANSWER = sa_msg(1, 2, sa_mad(0x81, 0x38, mcm_record()))
LEAVE_ANSWER = sa_msg(2, 1, sa_mad(0x95, 0x38, mcm_record()))
TABLE_ANSWER = sa_msg(3, 0, sa_mad(0x92, 0x38, mcm_record(), attr_offset=7)[:56 + 56], mode=2, larg=56 * 20)


def port_info(state=4, phys=5, lid=2, sm_lid=1, lmc=0, neighbor_mtu=4, mtu_cap=4, prefix=0xfe80 << 48):
    """PortInfo (IBA 14.2.5.6), the fields the software HCA reads."""
    b = bytearray(64)
    b[8:16] = struct.pack(">Q", prefix)
    b[16:20] = struct.pack(">HH", lid, sm_lid)
    b[32] = 0x10 | state
    b[33] = phys << 4 | 2
    b[34] = lmc
    b[36] = neighbor_mtu << 4
    b[41] = mtu_cap
    return bytes(b)


def node_info(guid=0x0002c90000000100, nports=2):
    """NodeInfo (IBA 14.2.5.3) of a CA whose port GUIDs follow its node GUID (as ibsim numbers them)."""
    return struct.pack(">BBBBQQQHH4x", 1, 1, 1, nports, guid, guid, guid + 1, 64, 0).ljust(64, b"\0")


def pkey_block(*keys):
    return struct.pack(">32H", *(list(keys) + [0] * (32 - len(keys))))


ETH_ARP_REQ = "000108000604000102000000000a0a0900010000000000000a090002"
IB_ARP_REQ = ("0020080014040001" "80000048fe800000000000000002c903000abcde" "0a090001"
              "0000000000000000000000000000000000000000" "0a090002")
ETH_NS = ("6000000000203afffd00000000000000000000000000000aff0200000000000000000001ff00000b"
          "87007d7300000000fd00000000000000000000000000000b010102000000000a")
ETH_RS = ("6000000000103afffe80000000000000000000fffe00000aff020000000000000000000000000002"
          "85007b1a00000000010102000000000a")
IB_NA = ("6000000000303afffd00000000000000000000000000000bfd00000000000000000000000000000a"
         "880052d760000000fd00000000000000000000000000000b0203000000000405fe800000000000000002c903000b0001")

def roce_frame(v4, payload, pad_extra=0):
    """A RoCE v2 UD SEND (Ethernet, IPv4 or IPv6, UDP to 4791, BTH, DETH, payload, ICRC)."""
    import zlib
    pad = -len(payload) % 4
    body = struct.pack(">BBHII", 0x64, pad << 4, 0xFFFF, 0x000011, 5) + struct.pack(">II", 0x0B1B, 0x4200) + \
        payload + bytes(pad)
    udp_len = 8 + len(body) + 4
    udp = struct.pack(">HHHH", 0xC001, 4791, udp_len, 0)
    if v4:
        ip = bytearray(struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 1, 0x4000, 64, 17, 0,
                                   bytes([10, 1, 0, 1]), bytes([10, 1, 0, 2])))
        masked = bytes(ip[:1]) + b"\xff" + bytes(ip[2:8]) + b"\xff" + bytes(ip[9:10]) + b"\xff\xff" + bytes(ip[12:])
        et = b"\x08\x00"
    else:
        ip = struct.pack(">IHBB", 6 << 28, udp_len, 17, 64) + bytes.fromhex("fe80" + "00" * 13 + "01") + \
            bytes.fromhex("fe80" + "00" * 13 + "02")
        masked = bytes([ip[0] | 0x0F, 0xFF, 0xFF, 0xFF]) + ip[4:7] + b"\xff" + ip[8:]
        et = b"\x86\xdd"
    masked += udp[:6] + b"\xff\xff" + body[:4] + b"\xff" + body[5:]
    icrc = zlib.crc32(masked, zlib.crc32(b"\xff" * 8))
    return bytes.fromhex("020000000002020000000001") + et + bytes(ip) + udp + body + struct.pack("<I", icrc)


SEEDS = {
    "hwaddr_text": [b"80:00:00:48:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0a:bc:de",
                    b"ff12:401b:8001::1:203", bytes.fromhex("80000048fe800000000000000002c903000abcde")],
    "encap": [bytes.fromhex("08000000"), bytes.fromhex("86dd0000"), bytes.fromhex("81000000")],
    "arp": [b"\x01\x40" + bytes.fromhex(ETH_ARP_REQ), b"\x00\x40" + bytes.fromhex(IB_ARP_REQ)],
    "nd": [b"\x01\xff" + bytes.fromhex(ETH_NS), b"\x03\xff" + bytes.fromhex(ETH_RS),
           b"\x00\xff" + bytes.fromhex(IB_NA)],
    "mgid": [bytes.fromhex("8001 02 e0010203".replace(" ", "")),
             bytes.fromhex("ffff 02 ff020000000000000000000000000001".replace(" ", ""))],
    "devargs": [b"provider=soft,dev=Hca1,port=1,pkey=0x8001,l2=ipoib,rxq_size=64",
                b"neigh=02:00:00:00:00:05/80:00:00:48:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0a:bc:de,allmulti=1",
                b"gid_index=3,bcast_qkey=0x1234,bcast_mtu=1024,fabric=sim,capture=x.pcap"],
    # flags (native, GRH, RoCE, scatter), source LID, source QPN, [GRH], datagram
    "rx_frame": [bytes.fromhex("00" "0002" "000049") + bytes.fromhex("08060000" + IB_ARP_REQ),
                 bytes.fromhex("0a" "0002" "000049") + bytes.fromhex("60" + "00" * 39) +
                 bytes.fromhex("86dd0000" + IB_NA),
                 bytes.fromhex("09" "0002" "000049") + bytes.fromhex("08000000" + "45000030" + "00" * 44)],
    "rx_slot": [rx_slot(1, 3), rx_slot(7, 1, owner=0), rx_slot(7, 2, owner=0x10102),
                rx_slot(2, 3, status=1, byte_len=9000),
                rx_slot(3, 3, byte_len=40, flags=0)],
    "sa_answer": [PATH_ANSWER, JOIN_ANSWER, LEAVE_ANSWER, TABLE_ANSWER,
                  PATH_ANSWER + JOIN_ANSWER + LEAVE_ANSWER + TABLE_ANSWER,
                  # NO_RECORDS to the path query; the join's request handed back by the kernel twice (retried,
                  # then timed out); an answer larger than the receive buffer to the table query.
                  sa_msg(0, 3, sa_mad(0x81, 0x35, status=0x0300)) +
                  sa_msg(1, 2, sa_mad(0x02, 0x38)[:24], status=110, mode=0x21, larg=24) +
                  sa_msg(1, 2, sa_mad(0x02, 0x38)[:24], status=110, mode=0x21, larg=24) +
                  sa_msg(3, 0, sa_mad(0x92, 0x38, mcm_record(), attr_offset=7)[:112], mode=3)],
    # Ethernet frames: RoCE v2 UD SENDs over IPv6 and IPv4, pad lengths 0 and 3
    "roce_packet": [roce_frame(False, bytes(range(100))), roce_frame(True, bytes(range(37))),
                    roce_frame(False, b"")],
    # port number, PortInfo, NodeInfo, P_KeyTable block
    "smp_answer": [b"\x01" + port_info() + node_info() + pkey_block(0xffff, 0x8001),
                   b"\x02" + port_info(state=2, lid=0, sm_lid=0) + node_info(nports=1) + pkey_block(0x7fff),
                   b"\x01" + port_info(state=1, phys=2, lid=0, sm_lid=0) + node_info() + pkey_block(),
                   b"\x01" + port_info(lid=0x10, lmc=2, mtu_cap=5, neighbor_mtu=3) + node_info() +
                   pkey_block(*range(0x8001, 0x8021))],
}

def main():
    out = sys.argv[1]
    for target, seeds in SEEDS.items():
        d = os.path.join(out, target)
        os.makedirs(d, exist_ok=True)
        for i, s in enumerate(seeds):
            with open(os.path.join(d, f"seed{i}"), "wb") as f:
                f.write(s)

if __name__ == "__main__":
    main()
