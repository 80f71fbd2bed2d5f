// SPDX-License-Identifier: GPL-2.0
/*
 * memdump_ram.c - which physical addresses may be read.
 *
 * Two layers decide it:
 *  1. the System RAM ranges of iomem_resource (byte granular, may end
 *     inside a page, e.g. 00001000-0009fbff), and
 *  2. per-page checks on the struct page behind each address.
 *
 * The resource tree is walked with walk_iomem_res_desc(): it is exported
 * (EXPORT_SYMBOL_GPL since before 5.4) and takes the resource lock itself,
 * which a module cannot (resource_lock is not exported).  It walks the tree
 * depth-first, so nested entries such as "System RAM (virtio_mem)" under a
 * device resource or "System RAM (kmem)" under a dax region are found; once
 * a match is found the walk resumes after its end, so children of a match
 * ("Kernel code" etc.) are not reported twice.  Each look-up copies the
 * range out under the lock, so a read works on a snapshot and memory
 * hot(un)plug cannot change a range under it; the per-page "online" test
 * covers memory that went away after the snapshot.
 *
 * Memory hot-remove frees the memmap (struct pages) and the direct-map page
 * tables of a range right after it has been offlined, without waiting for
 * an RCU grace period (only the sub-section usage map is freed by RCU).  So
 * a memory notifier makes offlining wait, in MEM_OFFLINE, for a grace
 * period: every reader checks and copies a page inside rcu_read_lock(), and
 * the sections are marked offline before MEM_OFFLINE is sent, so a reader
 * either finished before removal starts or sees the page offline.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/ioport.h>
#include <linux/memory.h>
#include <linux/mm.h>
#include <linux/memory_hotplug.h>
#include <linux/notifier.h>
#include <linux/page-flags.h>
#include <linux/printk.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>

#include "memdump.h"
#include "memdump_compat.h"

/*
 * Same flags walk_system_ram_res() uses (that helper is not exported).
 * IORESOURCE_BUSY matters: virtio-mem requests its whole device region as
 * a parent resource with IORESOURCE_SYSTEM_RAM set and BUSY cleared, and
 * that parent covers unplugged memory with no backing; only its BUSY
 * children ("System RAM (virtio_mem)") are memory that was added.
 */
#define MEMDUMP_RAM_FLAGS (IORESOURCE_SYSTEM_RAM | IORESOURCE_BUSY)

struct memdump_find {
	struct memdump_range range;
	bool found;
};

/* Stop at the first match: the walk visits ranges in address order. */
static int memdump_find_first(struct resource *res, void *arg)
{
	struct memdump_find *find = arg;

	find->range.start = res->start;
	/* iomem ends are inclusive; ours are exclusive. */
	find->range.end = (u64)res->end + 1;
	find->found = true;
	return 1;
}

/**
 * memdump_ram_find() - first System RAM range that ends above @addr
 * @addr: physical address
 * @range: the range, clipped to start no lower than @addr
 *
 * One walk of the resource tree, under its lock.
 *
 * Return: 0 and @range filled in, or -ENOENT when no RAM lies at or above
 * @addr.  @addr is inside RAM exactly when @range->start == @addr.
 */
int memdump_ram_find(u64 addr, struct memdump_range *range)
{
	struct memdump_find find = { .found = false };

	/* The walk clips the reported resource to [addr, U64_MAX]. */
	walk_iomem_res_desc(IORES_DESC_NONE, MEMDUMP_RAM_FLAGS, addr, U64_MAX,
			    &find, memdump_find_first);
	if (!find.found || find.range.end <= addr)
		return -ENOENT;
	*range = find.range;
	return 0;
}

/**
 * memdump_ram_run() - the run of RAM that contains @addr
 * @addr: physical address
 * @run: [@addr, end of the last adjacent System RAM range)
 *
 * Adjacent ranges are merged: hot-added memory comes as one resource per
 * memory block, and a hole between them is what a reader cares about.
 * Only SEEK_HOLE needs this; read() looks up one range at a time.  Each
 * step is a walk of the whole tree, so the loop yields the CPU.
 *
 * Return: 0, -ENXIO if @addr is in a hole, -ENOENT if above all RAM.
 */
int memdump_ram_run(u64 addr, struct memdump_range *run)
{
	struct memdump_range next;
	int ret;

	ret = memdump_ram_find(addr, run);
	if (ret)
		return ret;
	if (run->start != addr)
		return -ENXIO;
	/* Bounded by the number of resources; each step moves forward. */
	while (!memdump_ram_find(run->end, &next) && next.start == run->end) {
		run->end = next.end;
		cond_resched();
	}
	return 0;
}

static int memdump_find_last(struct resource *res, void *arg)
{
	u64 *end = arg;

	if ((u64)res->end + 1 > *end)
		*end = (u64)res->end + 1;
	return 0;
}

/**
 * memdump_ram_end() - end (exclusive) of the highest System RAM range
 *
 * This is "end of file": SEEK_END is relative to it and a read at or past
 * it returns 0, so a blind sequential reader stops.
 */
u64 memdump_ram_end(void)
{
	u64 end = 0;

	walk_iomem_res_desc(IORES_DESC_NONE, MEMDUMP_RAM_FLAGS, 0, U64_MAX,
			    &end, memdump_find_last);
	return end;
}

/**
 * memdump_page_get() - the page behind a System RAM address, if readable
 * @phys: physical address inside a System RAM range
 * @pagep: the page, on success
 *
 * iomem says what the firmware and drivers declared; the page says what
 * the memory manager is doing with it now.  A page is skipped when:
 *  - its section is not online or it has no memmap (hot-removed, not yet
 *    onlined, ZONE_DEVICE; see memdump_pfn_to_online_page());
 *  - it is hardware-poisoned (reading it again would raise another machine
 *    check; for a huge page the flag may sit on the head page only);
 *  - it is logically offline (PageOffline: balloon-inflated or virtio-mem
 *    unplugged; the hypervisor may have taken the backing away);
 *  - it is unaccepted memory of a confidential guest (see compat header);
 *  - it is not present in the direct map (see compat header).
 *
 * The caller holds memdump_offline_begin() and then rcu_read_lock(), and
 * keeps both until it has copied the page: the checks hold only that long.
 * No reference is taken: the page may be freed or reused while we copy,
 * which only changes the bytes we get, the same as for any live dump.
 *
 * Return: 0 or -EIO.
 */
int memdump_page_get(u64 phys, struct page **pagep)
{
	unsigned long pfn = PHYS_PFN(phys);
	struct page *page;

	page = memdump_pfn_to_online_page(pfn);
	if (!page)
		return -EIO;
	if (PageHWPoison(page) || PageHWPoison(compound_head(page)))
		return -EIO;
	if (PageOffline(page))
		return -EIO;
	if (memdump_phys_unaccepted(PFN_PHYS(pfn)))
		return -EIO;
	if (!memdump_direct_map_present(page))
		return -EIO;
	*pagep = page;
	return 0;
}

/*
 * Offlining (the step before hot-remove) waits here for every reader that
 * may have seen the memory online: they check and copy under
 * rcu_read_lock().  MEM_GOING_OFFLINE needs nothing: until MEM_OFFLINE the
 * memmap, the direct map and the memory itself are all still there.
 */
static int memdump_memory_callback(struct notifier_block *nb,
				   unsigned long action, void *arg)
{
	if (action == MEM_OFFLINE)
		synchronize_rcu();
	return NOTIFY_OK;
}

static struct notifier_block memdump_memory_nb = {
	.notifier_call = memdump_memory_callback,
};

/**
 * memdump_ram_init() - load-time checks and the memory notifier
 *
 * Return: 0, or a negative errno: the module must not load.
 */
int memdump_ram_init(void)
{
	const char *why = NULL;
	int ret;

	ret = memdump_unaccepted_init(&why);
	if (ret) {
		pr_err("refusing to load: %s\n", why);
		return ret;
	}
	/* A no-op returning 0 on kernels without memory hotplug. */
	ret = register_memory_notifier(&memdump_memory_nb);
	if (ret)
		pr_err("cannot register a memory notifier: %d\n", ret);
	return ret;
}

void memdump_ram_exit(void)
{
	unregister_memory_notifier(&memdump_memory_nb);
}
