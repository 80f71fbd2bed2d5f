// SPDX-License-Identifier: GPL-2.0
/*
 * memdump_copy.c - copy bytes out of a physical page, safely.
 *
 * The bytes go into a kernel bounce buffer first and only then to user
 * space, for two reasons:
 *  - the read of the source is the dangerous half (a poisoned cache line
 *    raises a machine check, an unmapped page a page fault); the recovering
 *    copy routines the kernel exports write to kernel memory only
 *    (copy_mc_to_user is not exported);
 *  - copy_to_user() straight from an arbitrary page would trip
 *    CONFIG_HARDENED_USERCOPY on slab pages ("kernel memory exposure"),
 *    whereas a page we allocated ourselves is always a legal source.
 */
#include <linux/highmem.h>
#include <linux/mm.h>

#include "memdump.h"
#include "memdump_compat.h"

/**
 * memdump_copy_from_page() - copy part of one page into a kernel buffer
 * @dst: kernel buffer of at least @len bytes
 * @page: page that passed memdump_page_get(), under the same locks
 * @offset: byte offset inside the page
 * @len: bytes to copy; @offset + @len <= PAGE_SIZE
 *
 * Does not sleep.  Without a machine-check-safe copy this is only reached
 * when the responder set allow_unsafe_copy (open() refuses otherwise).
 *
 * Return: bytes copied.  Fewer than @len means the copy stopped at a
 * machine check or fault; the bytes before it are good.
 */
size_t memdump_copy_from_page(void *dst, struct page *page,
			      unsigned int offset, size_t len)
{
	size_t left;
	void *src;

	src = memdump_kmap(page);
	if (memdump_copy_mc_usable())
		left = memdump_copy_mc(dst, src + offset, len);
	else
		left = memdump_copy_nofault(dst, src + offset, len) ? len : 0;
	memdump_kunmap(src);
	return len - left;
}

/* For the load message: which copy protects reads on this machine. */
const char *memdump_copy_method(void)
{
	if (memdump_copy_mc_usable())
		return "copy_mc_to_kernel (machine-check and fault safe)";
	return "copy_from_kernel_nofault (fault safe, no machine-check recovery)";
}
