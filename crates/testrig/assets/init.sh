#!/bin/busybox sh
# rvs test VM init: mounts the pseudo file systems, loads the modules the
# image lists, runs /rvs/test.sh and reports its exit code on the serial
# console between marker lines the host rig parses. Then it powers off.
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox mount -t tmpfs tmpfs /tmp
/bin/busybox mount -t tmpfs tmpfs /run
/bin/busybox --install -s
export PATH=/rvs/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
mkdir -p /dev/pts /dev/shm /run/netns /sys/kernel/debug
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
# ip-netns bind-mounts namespaces under /run/netns; that needs a shared mount.
mount --make-shared / 2>/dev/null

while read -r module params; do
    [ -n "$module" ] || continue
    # shellcheck disable=SC2086 # params are separate words by design
    insmod "/usr/lib/rvs/modules/$module" $params 2>/tmp/insmod.err ||
        grep -q 'File exists' /tmp/insmod.err ||
        echo "rvs-init: insmod $module: $(cat /tmp/insmod.err)"
done < /usr/lib/rvs/modules.order

/usr/sbin/ip link set lo up
[ -f /rvs/env ] && . /rvs/env

echo "@@RVS-BEGIN@@"
if [ -f /rvs/test.sh ]; then
    sh /rvs/test.sh < /dev/null
    rc=$?
else
    echo "rvs-init: no /rvs/test.sh"
    rc=127
fi
echo "@@RVS-END rc=$rc@@"
if [ "$rc" != 0 ]; then
    echo "@@RVS-DMESG@@"
    dmesg | tail -n 40
fi
sync
reboot -f
