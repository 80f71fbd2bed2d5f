/* SPDX-License-Identifier: GPL-2.0 */
/*
 * memdump.h - declarations shared by the memdump module's source files.
 *
 * The module exposes physical RAM, read-only, through the misc character
 * device /dev/memdump: the file offset is the physical address.  Only what
 * the kernel publishes as System RAM in iomem_resource can be read; every
 * other address is a hole.
 *
 * Error contract of read(2) (user space relies on it, keep it stable):
 *   0        offset at or beyond the end of the highest System RAM range (EOF),
 *            or a zero-length read
 *   -EFAULT  the read starts at an address that is not System RAM (a hole),
 *            or the user buffer is bad
 *   -EIO     the read starts in a System RAM page that must not be read
 *            (not valid, not online, hardware-poisoned, logically offline,
 *            unaccepted, not in the direct map) or the copy hit a machine
 *            check / fault
 *   -EINTR   a fatal signal arrived before the first byte was copied
 *   -EINVAL  negative offset
 *   -ENOMEM  no bounce page
 *   short    a read that runs into a hole or an unreadable page returns the
 *            bytes copied up to it; at most MEMDUMP_MAX_READ per call
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
int memdump_ram_find(u64 addr, struct memdump_range *range);
int memdump_ram_run(u64 addr, struct memdump_range *run);
u64 memdump_ram_end(void);
int memdump_page_get(u64 phys, struct page **pagep);

/* memdump_copy.c */
size_t memdump_copy_from_page(void *dst, struct page *page,
			      unsigned int offset, size_t len);
const char *memdump_copy_method(void);

#endif /* MEMDUMP_H */
