/* SPDX-License-Identifier: GPL-2.0 */
/*
 * memdump.h - declarations shared by the memdump module's source files.
 *
 * The module exposes physical RAM, read-only, through the misc character
 * device /dev/memdump: the file offset is the physical address.  Only what
 * the kernel publishes as System RAM in iomem_resource can be read; every
 * other address is a hole.
 *
 * Error contract (user space relies on it, keep it stable):
 *
 * open(2)
 *   -EACCES     from the VFS before the module runs: the node is 0400 root
 *   -EPERM      opened for writing (whoever asks), no CAP_SYS_RAWIO, or
 *               kernel lockdown in confidentiality mode (as /proc/kcore)
 *   -EOPNOTSUPP no machine-check-safe copy on this machine or kernel and
 *               the module parameter allow_unsafe_copy is not set (a latent
 *               uncorrectable memory error would panic the machine)
 *
 * read(2) / pread(2)
 *   0        offset at or beyond the end of the highest System RAM range (EOF),
 *            or a zero-length read
 *   -ENXIO   the read starts at an address that is not System RAM (a hole)
 *   -EFAULT  the user buffer is bad (and nothing was copied)
 *   -EIO     the read starts in a System RAM page that must not be read
 *            (not online, no memmap, hardware-poisoned, logically offline,
 *            unaccepted, not in the direct map) or the copy hit a machine
 *            check / fault
 *   -EINTR   a fatal signal arrived before the first byte was copied
 *   -EINVAL  negative offset, or offset + count overflows loff_t (both
 *            refused by the VFS before the module runs)
 *   -ENOMEM  no bounce page
 *   short    a read that runs into a hole, an unreadable page or a bad part
 *            of the user buffer returns the bytes copied up to it; at most
 *            MEMDUMP_MAX_READ per call
 *
 * lseek(2)
 *   SEEK_SET/SEEK_CUR/SEEK_END (END = end of the highest System RAM range);
 *   -EINVAL  negative or overflowing result, unknown whence
 *   -ENXIO   SEEK_DATA or SEEK_HOLE at or beyond the end of RAM
 *   SEEK_DATA and SEEK_HOLE answer from iomem alone: SEEK_DATA does not
 *   skip pages that fail the per-page checks (they read as -EIO).
 */
#ifndef MEMDUMP_H
#define MEMDUMP_H

#include <linux/types.h>
#include <linux/mm_types.h>

#define MEMDUMP_NAME "memdump"
#define MEMDUMP_VERSION "0.1.0"

/*
 * Upper bound of one read() call.  The VFS already caps a call at
 * MAX_RW_COUNT (about 2 GiB); a smaller cap keeps one system call short
 * (latency of signals, rmmod, hotplug) at no cost to a reader that loops.
 */
#define MEMDUMP_MAX_READ (2UL << 20)

/* A System RAM range as seen by one look-up, half-open: [start, end). */
struct memdump_range {
	u64 start;
	u64 end;
};

/* memdump_ram.c */
int memdump_ram_init(void);
void memdump_ram_exit(void);
int memdump_ram_find(u64 addr, struct memdump_range *range);
int memdump_ram_run(u64 addr, struct memdump_range *run);
u64 memdump_ram_end(void);
int memdump_page_get(u64 phys, struct page **pagep);

/* memdump_copy.c */
size_t memdump_copy_from_page(void *dst, struct page *page,
			      unsigned int offset, size_t len);
const char *memdump_copy_method(void);

#endif /* MEMDUMP_H */
