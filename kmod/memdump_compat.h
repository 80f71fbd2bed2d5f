/* SPDX-License-Identifier: GPL-2.0 */
/*
 * memdump_compat.h - every kernel-version and architecture conditional of
 * the memdump module lives here, so the other files read as plain code.
 *
 * Supported: Linux 5.4 and later, 64-bit only.  x86-64 is the focus; other
 * 64-bit architectures build, but have no machine-check-safe copy (see
 * memdump_copy_mc_usable() below) and no direct-map test.
 */
#ifndef MEMDUMP_COMPAT_H
#define MEMDUMP_COMPAT_H

#include <linux/version.h>
#include <linux/bitops.h>
#include <linux/irqflags.h>
#include <linux/mm.h>
#include <linux/highmem.h>
#include <linux/page-flags.h>
#include <linux/uaccess.h>
#include <linux/memory_hotplug.h>
#ifdef CONFIG_UNACCEPTED_MEMORY
#include <linux/efi.h>
#endif
#ifdef CONFIG_X86
#include <asm/cpufeature.h>
#include <asm/pgtable.h>
#endif

#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 4, 0)
#error "memdump needs Linux 5.4 or later (walk_iomem_res_desc, PageOffline, lockdown)"
#endif

/*
 * 32-bit kernels (HIGHMEM, PAE, a direct map that covers only part of RAM)
 * have never been tested: refuse to build rather than run untested code on
 * an evidence machine.
 */
#ifndef CONFIG_64BIT
#error "memdump supports 64-bit kernels only"
#endif

/*
 * Temporary kernel mapping of a page.  On 64-bit kernels both are
 * page_address(); kmap_local_page() (5.11+) does not disable preemption,
 * kmap_atomic() does, and nothing in the copy sleeps.
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
 * It does NOT survive a machine check: its exception-table entries are of
 * the user-access type, and a #MC on a kernel-mode read with such an entry
 * is fatal (the kernel panics).
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
 * On x86 it picks one of three routines:
 *  - copy_mc_fragile(), when the copy_mc_fragile_key static key is on: the
 *    kernel turns it on for the Xeons whose PCI quirks announce the RAS
 *    capability (Brickland: Haswell-EX/Broadwell-EX; Purley: Skylake-SP)
 *    and for mce=recovery;
 *  - copy_mc_enhanced_fast_string() (rep movsb), when the CPU has ERMS;
 *  - otherwise plain memcpy(), which recovers from nothing.
 * The two recovering routines' exception-table entries (of type
 * EX_TYPE_DEFAULT_MCE_SAFE, earlier _ASM_EXTABLE_FAULT) fix up a page fault
 * as well, so one call is safe against both #MC and #PF.  The static key is
 * not exported, so a module cannot see it: we count the copy as usable only
 * with ERMS, where both recovering routines may run and memcpy() never
 * does.  Every Brickland/Purley part has ERMS, so nothing usable is lost.
 *
 * Where it is not usable (x86 without ERMS, kernels before 5.10, other
 * architectures) the only copy left is the fault-safe one above, and a
 * latent uncorrectable memory error met by it panics the machine: open()
 * is refused unless the responder accepts that risk (allow_unsafe_copy).
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 10, 0) && defined(CONFIG_X86) && \
	defined(CONFIG_ARCH_HAS_COPY_MC)
static inline bool memdump_copy_mc_usable(void)
{
	return boot_cpu_has(X86_FEATURE_ERMS);
}

static inline size_t memdump_copy_mc(void *dst, const void *src, size_t len)
{
	return copy_mc_to_kernel(dst, src, len);
}
#else
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
 * The struct page of an online pfn, or NULL.
 *
 * pfn_to_online_page() is the authoritative test and comes first: it only
 * returns a page whose section is present and online (not hot-removed, not
 * offline, not ZONE_DEVICE).  Since 5.12 it also checks the sub-section
 * map (pfn_section_valid()), i.e. it includes what pfn_valid() adds, and it
 * knows about ZONE_DEVICE sub-sections that collide with System RAM in one
 * section.  Before 5.12 it only looks at the section's online bit, so
 * pfn_valid() has to follow to reject a pfn in a sub-section that has no
 * memmap.  Called under rcu_read_lock(): on kernels with the hot-remove
 * fix (5ec8e8ea8b77) the sub-section map it reads is freed after an RCU
 * grace period, and our memory notifier makes offlining wait for us.
 */
static inline struct page *memdump_pfn_to_online_page(unsigned long pfn)
{
	struct page *page = pfn_to_online_page(pfn);

#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 12, 0)
	if (page && !pfn_valid(pfn))
		return NULL;
#endif
	return page;
}

/*
 * Synchronisation with drivers that set or clear PageOffline() (virtio-mem,
 * balloons): the page-flags.h contract is that a reader of page contents
 * checks PageOffline() under page_offline_freeze(), which is not exported.
 * page_offline_begin()/page_offline_end() (5.14+, exported) take the same
 * rwsem for writing; virtio-mem marks pages offline under it before it
 * unplugs them and clears the mark under it after plugging them, so a check
 * and copy inside it cannot meet memory without backing.  It sleeps: take
 * it outside rcu_read_lock().  Before 5.14 there is no such lock (and no
 * driver takes one); the check alone is what those kernels offer.
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 14, 0)
static inline void memdump_offline_begin(void)
{
	page_offline_begin();
}

static inline void memdump_offline_end(void)
{
	page_offline_end();
}
#else
static inline void memdump_offline_begin(void)
{
}

static inline void memdump_offline_end(void)
{
}
#endif

/*
 * Is the page mapped in the kernel's direct map?  Pages can be removed from
 * it on purpose (memfd_secret, DEBUG_PAGEALLOC, KFENCE guard pages,
 * confidential-computing private memory, and the partial pages memblock
 * trims from RAM ranges above 1 MiB); such a page is not ours to read, so
 * it is reported as unreadable (-EIO) instead of being copied.  The copy
 * stays fault-safe for the race where a page is unmapped after this test.
 *
 * lookup_address() walks the kernel page tables without a lock.  Interrupts
 * stay off for the walk and the read of the entry: set_memory_*() flushes
 * the TLB by IPI before it frees a page-table page (6.14+ collapses split
 * mappings and frees the tables), so that free waits for us.  Hot-remove
 * frees direct-map page tables without such a flush; it is kept away by
 * the memory notifier (memdump_ram.c) and our rcu_read_lock().
 * lookup_address() is exported on x86 only; elsewhere the fault-safe copy
 * is the whole protection.
 */
static inline bool memdump_direct_map_present(struct page *page)
{
#ifdef CONFIG_X86
	unsigned int level;
	unsigned long flags;
	bool present;
	pte_t *pte;

	local_irq_save(flags);
	pte = lookup_address((unsigned long)page_address(page), &level);
	present = pte && (pte_flags(READ_ONCE(*pte)) & _PAGE_PRESENT);
	local_irq_restore(flags);
	return present;
#else
	return true;
#endif
}

/*
 * Unaccepted memory (TDX / SEV-SNP guests): touching a page the guest has
 * not accepted yet kills the guest, so it must never be read.
 *
 * The truth is the EFI unaccepted-memory table (efi.unaccepted, a physical
 * address; EFI_INVALID_TABLE_ADDR when there is none): a bitmap with one
 * bit per unit_size bytes from phys_base, a set bit meaning "not accepted
 * yet"; memory outside the bitmap is accepted.  accept_memory() clears a
 * bit only after arch_accept_memory() has returned for its range, and bits
 * are never set again, so "bit clear" is safe to act on without the
 * kernel's lock (range_contains_unaccepted_memory() is not exported).
 * The zone counter NR_UNACCEPTED and PageUnaccepted() are NOT used: both
 * say "accepted" while a block is being accepted (the kernel updates them
 * under zone->lock, then drops it and accepts).
 *
 * Gated on CONFIG_UNACCEPTED_MEMORY alone, whatever the version, so vendor
 * kernels with the feature backported are covered.  A kernel with the
 * option but without the table layout we know is refused at load (fail
 * closed), and a layout change the checks below can see breaks the build.
 */
#if defined(CONFIG_UNACCEPTED_MEMORY) && defined(LINUX_EFI_UNACCEPTED_MEM_TABLE_GUID)
static inline struct efi_unaccepted_memory *memdump_unaccepted_table(void)
{
	/* version, unit_size, phys_base, size, then the bitmap in place. */
	BUILD_BUG_ON(offsetof(struct efi_unaccepted_memory, bitmap) != 24);
	BUILD_BUG_ON(sizeof(struct efi_unaccepted_memory) != 24);
	BUILD_BUG_ON(!__same_type(efi.unaccepted, unsigned long));

	if (efi.unaccepted == EFI_INVALID_TABLE_ADDR)
		return NULL;
	return __va(efi.unaccepted);
}

/* Load-time check: 0, or -EOPNOTSUPP with *why set for a table we do not know. */
static inline int memdump_unaccepted_init(const char **why)
{
	struct efi_unaccepted_memory *table = memdump_unaccepted_table();

	if (!table)
		return 0;
	if (table->version != 1) {
		*why = "unaccepted-memory table of an unknown version";
		return -EOPNOTSUPP;
	}
	/* One bit must cover whole pages: one test per page is then enough. */
	if (table->unit_size < PAGE_SIZE || table->unit_size % PAGE_SIZE) {
		*why = "unaccepted-memory table with a unit that is not whole pages";
		return -EOPNOTSUPP;
	}
	return 0;
}

/* Is the page at @phys (page aligned) still unaccepted? */
static inline bool memdump_phys_unaccepted(u64 phys)
{
	struct efi_unaccepted_memory *table = memdump_unaccepted_table();
	u64 bit;

	if (!table || phys < table->phys_base)
		return false;
	bit = div_u64(phys - table->phys_base, table->unit_size);
	if (bit >= table->size * BITS_PER_BYTE)
		return false;
	if (test_bit(bit, table->bitmap))
		return true;
	/* Order the bit test before every read of the page's contents. */
	smp_rmb();
	return false;
}
#elif defined(CONFIG_UNACCEPTED_MEMORY)
static inline int memdump_unaccepted_init(const char **why)
{
	*why = "CONFIG_UNACCEPTED_MEMORY without the EFI unaccepted-memory table this module knows";
	return -EOPNOTSUPP;
}

static inline bool memdump_phys_unaccepted(u64 phys)
{
	return true;
}
#else
static inline int memdump_unaccepted_init(const char **why)
{
	return 0;
}

static inline bool memdump_phys_unaccepted(u64 phys)
{
	return false;
}
#endif

#endif /* MEMDUMP_COMPAT_H */
