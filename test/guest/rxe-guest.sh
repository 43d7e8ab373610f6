#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Run a script as root in a QEMU guest that boots Debian's stock 6.1 kernel
# (software emulation: this machine's /dev/kvm is unusable) with this host's
# root file system shared read-only under a writable overlay, and a Soft-RoCE
# device rxe0 up on a dummy netdev (10.1.0.1). Prints the script's output and
# exits with its status.
#
# usage: test/guest/rxe-guest.sh SCRIPT [ARGS...]
#   The script runs in a scratch directory shared with the host; the guest
#   has 2 vCPUs and 2 GiB. Needs root (installs qemu-system-x86,
#   busybox-static and kmod; downloads the kernel package once into .cache/).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
script=$(realpath "${1:?usage: rxe-guest.sh SCRIPT [ARGS...]}"); shift
kver=${IPOIB_GUEST_KERNEL:-6.1.0-47-amd64}
cache=${IPOIB_CACHE_DIR:-$top/.cache}/guest
work=$top/build/guest

need=()
# The guest runs the host's binaries: rdma-core, its providers (rxe) and tools too.
for p in qemu-system-x86 busybox-static kmod cpio rdma-core ibverbs-providers ibverbs-utils; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi

# The kernel: Debian's package, unpacked (never installed), modules indexed.
kroot=$cache/linux-$kver
if [ ! -f "$kroot/boot/vmlinuz-$kver" ]; then
    mkdir -p "$cache"
    (cd "$cache" && apt-get download "linux-image-$kver" >/dev/null 2>&1) ||
        { echo "rxe-guest: cannot download linux-image-$kver" >&2; exit 1; }
    rm -rf "$kroot"
    dpkg-deb -x "$cache"/linux-image-"$kver"_*.deb "$kroot"
    /sbin/depmod -b "$kroot" "$kver"
fi

# A small initramfs: busybox and what it takes to mount the host over 9p.
mkdir -p "$work"
initrd=$work/initrd-$kver.cpio.gz
if [ ! -f "$initrd" ] || [ "$0" -nt "$initrd" ]; then
    ir=$(mktemp -d)
    mkdir -p "$ir"/{bin,dev,proc,sys,host,upper,merged,lib}
    cp /bin/busybox "$ir/bin/busybox"
    mods=(kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
          kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko
          kernel/drivers/virtio/virtio_pci.ko kernel/net/9p/9pnet.ko kernel/net/9p/9pnet_virtio.ko
          kernel/fs/netfs/netfs.ko kernel/fs/fscache/fscache.ko kernel/fs/9p/9p.ko kernel/fs/overlayfs/overlay.ko)
    for m in "${mods[@]}"; do cp "$kroot/lib/modules/$kver/$m" "$ir/lib/"; done
    cat > "$ir/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in ${mods[*]}; do insmod /lib/\$(basename \$m); done
mount -t 9p -o trans=virtio,version=9p2000.L,ro hostroot /host
mount -t tmpfs tmpfs /upper; mkdir -p /upper/u /upper/w
mount -t overlay overlay -o lowerdir=/host,upperdir=/upper/u,workdir=/upper/w /merged
mkdir -p /merged/ipoib-guest /merged/lib/modules/$kver
mount -t 9p -o trans=virtio,version=9p2000.L out /merged/ipoib-guest
mount --bind /merged$kroot/lib/modules/$kver /merged/lib/modules/$kver
mount -t proc proc /merged/proc; mount -t sysfs sys /merged/sys; mount -t devtmpfs dev /merged/dev
mkdir -p /merged/dev/pts /merged/dev/shm; mount -t devpts -o ptmxmode=666 devpts /merged/dev/pts; mount -t tmpfs tmpfs /merged/dev/shm
mkdir -p /merged/dev/hugepages /merged/run /merged/tmp; mount -t tmpfs tmpfs /merged/run; mount -t tmpfs tmpfs /merged/tmp
printf '#!/bin/sh\nexec chroot /merged /sbin/modprobe "\\\$@"\n' > /bin/modprobe-chroot; chmod +x /bin/modprobe-chroot
echo /bin/modprobe-chroot > /proc/sys/kernel/modprobe
chroot /merged /bin/sh -c 'cd /ipoib-guest && sh ./guest-main.sh > output 2>&1; echo \$? > status'
sync
poweroff -f
INIT
    chmod +x "$ir/init"
    (cd "$ir" && find . | cpio -o -H newc 2>/dev/null | gzip -1) > "$initrd"
    rm -rf "$ir"
fi

# The job: bring rxe0 up, then the caller's script.
out=$(mktemp -d -p "$work")
[ -n "${IPOIB_GUEST_KEEP:-}" ] || trap 'rm -rf "$out"' EXIT
cp "$script" "$out/user-script.sh"
printf '%q ' "$@" > "$out/args"
cat > "$out/guest-main.sh" <<'MAIN'
set -e
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
modprobe crc32_generic 2>/dev/null || true  # rxe's ICRC asks the crypto API for "crc32"
modprobe rdma_rxe
modprobe ib_uverbs
modprobe rdma_ucm  # librdmacm's /dev/infiniband/rdma_cm (connected mode's CM)
modprobe dummy
ip link add dummy0 type dummy
ip addr add 10.1.0.1/24 dev dummy0
ip link set dummy0 up
rdma link add rxe0 type rxe netdev dummy0
set +e
eval "sh ./user-script.sh $(cat args)"
MAIN
timeout --kill-after=10 "${IPOIB_GUEST_TIMEOUT:-600}" qemu-system-x86_64 \
    -accel tcg,thread=multi,tb-size=256 -cpu max -smp 2 -m 2G -nographic -no-reboot \
    -kernel "$kroot/boot/vmlinuz-$kver" -initrd "$initrd" \
    -append "console=ttyS0 quiet panic=-1" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
    -virtfs local,path="$out",mount_tag=out,security_model=none \
    > "$out/console" 2>&1 || true
if [ ! -f "$out/status" ]; then
    echo "rxe-guest: the guest did not finish; console:" >&2
    tail -40 "$out/console" >&2
    exit 125
fi
cat "$out/output"
exit "$(cat "$out/status")"
