/* SPDX-License-Identifier: GPL-2.0 */
/*
 * memdump_compat.h - every kernel-version and architecture conditional of
 * the memdump module lives here, so the other files read as plain code.
 *
 * Supported: Linux 5.4 and later.  x86-64 is the focus; other 64-bit
 * architectures build and fall back to the generic helpers noted below.
 */
#ifndef MEMDUMP_COMPAT_H
#define MEMDUMP_COMPAT_H

#include <linux/version.h>
#include <linux/mm.h>
#include <linux/highmem.h>
#include <linux/uaccess.h>
#include <linux/memory_hotplug.h>
#include <linux/vmstat.h>
#ifdef CONFIG_X86
#include <asm/cpufeature.h>
#include <asm/pgtable.h>
#endif

#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 4, 0)
#error "memdump needs Linux 5.4 or later (walk_iomem_res_desc, PageOffline, lockdown)"
#endif

/*
 * Temporary kernel mapping of a page.  On 64-bit kernels without HIGHMEM
 * both are page_address(); kmap_local_page() (5.11+) does not disable
 * preemption, kmap_atomic() does, and nothing in the copy sleeps.
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 11, 0)
static inline void *memdump_kmap(struct page *page)
{
	return kmap_local_page(page);
}

static inline void memdump_kunmap(void *addr)
{
	kunmap_local(addr);
}
#else
static inline void *memdump_kmap(struct page *page)
{
	return kmap_atomic(page);
}

static inline void memdump_kunmap(void *addr)
{
	kunmap_atomic(addr);
}
#endif

/*
 * A copy that survives a page fault on the source: returns 0 or -EFAULT.
 * probe_kernel_read() was renamed copy_from_kernel_nofault() in 5.8.
 */
static inline long memdump_copy_nofault(void *dst, const void *src, size_t len)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 8, 0)
	return copy_from_kernel_nofault(dst, src, len);
#else
	return probe_kernel_read(dst, src, len);
#endif
}

/*
 * copy_mc_to_kernel() (5.10+, renamed from memcpy_mcsafe) recovers from a
 * machine check on the source and returns the number of bytes NOT copied.
 *
 * On x86 it only uses a recovering routine when the CPU has ERMS
 * (rep movsb with an exception-table entry) or needs the "fragile" variant;
 * otherwise it silently falls back to plain memcpy(), which would neither
 * recover from #MC nor from a #PF.  The exception-table type of both
 * recovering routines (EX_TYPE_DEFAULT_MCE_SAFE, earlier a fault handler)
 * also fixes up a page fault, so with ERMS one call is safe against both.
 * Without ERMS we use the fault-safe copy: a #MC there is no worse than
 * what the kernel's own copy_mc_to_kernel() would do on that CPU (memcpy),
 * except on the rare "fragile" parts without ERMS (Sandy Bridge-EP).
 * Other architectures: the fault-safe copy (no #MC recovery).
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 10, 0) && defined(CONFIG_X86) && \
	defined(CONFIG_ARCH_HAS_COPY_MC)
#define MEMDUMP_HAVE_COPY_MC 1
static inline bool memdump_copy_mc_usable(void)
{
	return boot_cpu_has(X86_FEATURE_ERMS);
}

static inline size_t memdump_copy_mc(void *dst, const void *src, size_t len)
{
	return copy_mc_to_kernel(dst, src, len);
}
#else
#define MEMDUMP_HAVE_COPY_MC 0
static inline bool memdump_copy_mc_usable(void)
{
	return false;
}

static inline size_t memdump_copy_mc(void *dst, const void *src, size_t len)
{
	return memdump_copy_nofault(dst, src, len) ? len : 0;
}
#endif

/*
 * Is the page mapped in the kernel's direct map?  Pages can be removed from
 * it on purpose (memfd_secret, DEBUG_PAGEALLOC, KFENCE guard pages,
 * confidential-computing private memory); such a page is not ours to read,
 * so it is reported as unreadable (-EIO) instead of being copied.  The copy
 * stays fault-safe for the race where a page is unmapped after this test.
 * lookup_address() is exported on x86 only; elsewhere the fault-safe copy
 * is the whole protection.
 */
static inline bool memdump_direct_map_present(struct page *page)
{
#ifdef CONFIG_X86
	unsigned int level;
	pte_t *pte;

	/* HIGHMEM (32-bit only) pages are mapped by kmap, not the direct map. */
	if (PageHighMem(page))
		return true;
	pte = lookup_address((unsigned long)page_address(page), &level);
	return pte && (pte_flags(READ_ONCE(*pte)) & _PAGE_PRESENT);
#else
	return true;
#endif
}

/*
 * Unaccepted memory (TDX / SEV-SNP guests, 6.5+): touching a page the
 * hypervisor has not accepted yet kills the guest, so it must never be read.
 * The kernel's own test (range_contains_unaccepted_memory) is not exported.
 *  - NR_UNACCEPTED counts pages still waiting; it only shrinks after boot,
 *    so zero means "nothing to worry about" (the usual case, and always the
 *    case when booted with accept_memory=eager).
 *  - 6.12+ marks the first page of each unaccepted MAX_ORDER block with the
 *    PageUnaccepted() type, so we test that block head.
 *  - 6.5..6.11 have no per-page test a module can use: refuse every page
 *    while anything is unaccepted (documented; boot with accept_memory=eager).
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 5, 0) && defined(CONFIG_UNACCEPTED_MEMORY)
static inline bool memdump_pfn_unaccepted(unsigned long pfn)
{
	if (!global_zone_page_state(NR_UNACCEPTED))
		return false;
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 12, 0)
	{
		struct page *head;

		head = pfn_to_online_page(ALIGN_DOWN(pfn, MAX_ORDER_NR_PAGES));
		return !head || PageUnaccepted(head);
	}
#else
	return true;
#endif
}
#else
static inline bool memdump_pfn_unaccepted(unsigned long pfn)
{
	return false;
}
#endif

#endif /* MEMDUMP_COMPAT_H */
