#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Write seed corpora for the fuzz targets into DIR/<target>/.

Wire formats: the known-answer vectors of the unit tests (Linux captures and
their IPoIB forms), prefixed with the control bytes each target expects.
rx_slot: receive slots of the software HCA as a correct sender leaves them."""
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

ETH_ARP_REQ = "000108000604000102000000000a0a0900010000000000000a090002"
IB_ARP_REQ = ("0020080014040001" "80000048fe800000000000000002c903000abcde" "0a090001"
              "0000000000000000000000000000000000000000" "0a090002")
ETH_NS = ("6000000000203afffd00000000000000000000000000000aff0200000000000000000001ff00000b"
          "87007d7300000000fd00000000000000000000000000000b010102000000000a")
ETH_RS = ("6000000000103afffe80000000000000000000fffe00000aff020000000000000000000000000002"
          "85007b1a00000000010102000000000a")
IB_NA = ("6000000000303afffd00000000000000000000000000000bfd00000000000000000000000000000a"
         "880052d760000000fd00000000000000000000000000000b0203000000000405fe800000000000000002c903000b0001")

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
