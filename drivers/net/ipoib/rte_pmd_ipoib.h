/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Public API of net_ipoib for applications that speak IPoIB themselves
 * (devarg l2=ipoib, "native" mode, like Solaris ibd's raw DLPI mode).
 *
 * In native mode a frame is the 4-byte IPoIB header (EtherType, reserved)
 * followed by the IP/ARP payload. The peer's address travels in an mbuf
 * dynamic field, registered by the driver under RTE_PMD_IPOIB_DYNFIELD_NAME:
 *   - RX: the sender (its QPN, its GID when the packet had a GRH or the
 *     sender is a known neighbour, else a zero GID) and its LID;
 *   - TX: the destination. A multicast destination is a multicast GID with
 *     QPN 0xffffff; a unicast one needs the GID, or the LID when lid != 0.
 * Usable from C and C++.
 */
#ifndef RTE_PMD_IPOIB_H
#define RTE_PMD_IPOIB_H

#include <stdint.h>

#include <rte_mbuf.h>
#include <rte_mbuf_dyn.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RTE_PMD_IPOIB_DYNFIELD_NAME "rte_pmd_ipoib_dynfield_addr"
#define RTE_PMD_IPOIB_HWADDR_LEN 20

struct rte_pmd_ipoib_addr {
	uint8_t hwaddr[RTE_PMD_IPOIB_HWADDR_LEN]; /* flags, QPN (24 bits), GID */
	uint16_t lid;                             /* 0: unknown / resolve from the GID */
	uint16_t reserved;
};

/* Offset of the field in the mbuf, or -1 if no net_ipoib port registered it yet. */
static inline int
rte_pmd_ipoib_dynfield_offset(void)
{
	return rte_mbuf_dynfield_lookup(RTE_PMD_IPOIB_DYNFIELD_NAME, NULL);
}

static inline struct rte_pmd_ipoib_addr *
rte_pmd_ipoib_addr(struct rte_mbuf *m, int offset)
{
	return RTE_MBUF_DYNFIELD(m, offset, struct rte_pmd_ipoib_addr *);
}

#ifdef __cplusplus
}
#endif

#endif /* RTE_PMD_IPOIB_H */
