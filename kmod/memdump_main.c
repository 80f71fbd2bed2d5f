// SPDX-License-Identifier: GPL-2.0
/*
 * memdump_main.c - the /dev/memdump misc device: physical RAM, read-only.
 *
 * The file offset is the physical address.  Only System RAM can be read
 * (see memdump_ram.c for the rules and memdump.h for the errno contract);
 * device memory is never mapped or touched, so a reader cannot hang a
 * machine the way a blind /dev/mem scan can.
 *
 * The file operations are deliberately few: open, llseek, read.
 * No write, no mmap, no ioctl: nothing here can change memory or read an
 * arbitrary kernel virtual address.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/capability.h>
#include <linux/fs.h>
#include <linux/gfp.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/overflow.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/security.h>
#include <linux/uaccess.h>

#include "memdump.h"
#include "memdump_compat.h"

/*
 * Without a machine-check-safe copy (memdump_copy_mc_usable()), reading a
 * page with a latent uncorrectable error panics the machine instead of
 * failing one read with -EIO.  open() refuses by default; a responder who
 * accepts that risk sets this (at load, or later as root through
 * /sys/module/memdump/parameters/allow_unsafe_copy).
 */
static bool allow_unsafe_copy;
module_param(allow_unsafe_copy, bool, 0644);
MODULE_PARM_DESC(allow_unsafe_copy,
		 "Allow reads where no machine-check-safe copy exists (x86 without ERMS, "
		 "kernels before 5.10, other architectures): an uncorrectable memory "
		 "error met while reading then panics the machine (default: refuse open)");

/*
 * open() rules:
 *  - read-only: a write open fails with -EPERM before anything else, so
 *    the answer does not depend on privileges (there is nothing to write);
 *  - CAP_SYS_RAWIO, the capability /dev/mem asks for: a root process that
 *    dropped it gets -EPERM even though the node's mode lets it open;
 *  - kernel lockdown: reading all of RAM is what /proc/kcore offers, so
 *    obey the same lockdown reason (confidentiality mode refuses it);
 *  - no machine-check-safe copy and no allow_unsafe_copy: -EOPNOTSUPP.
 * The node itself is 0400 root, so other users get -EACCES from the VFS
 * before this function runs.  Nothing is allocated, so no release().
 */
static int memdump_open(struct inode *inode, struct file *file)
{
	int ret;

	if (file->f_mode & FMODE_WRITE)
		return -EPERM;
	if (!capable(CAP_SYS_RAWIO))
		return -EPERM;
	ret = security_locked_down(LOCKDOWN_KCORE);
	if (ret)
		return ret;
	if (!memdump_copy_mc_usable() && !READ_ONCE(allow_unsafe_copy)) {
		pr_warn_ratelimited("open refused: no machine-check-safe copy here; "
				    "allow_unsafe_copy=1 accepts the risk of a panic\n");
		return -EOPNOTSUPP;
	}
	return 0;
}

/*
 * Seeking: SEEK_SET, SEEK_CUR, SEEK_END (relative to the end of the highest
 * System RAM range), SEEK_DATA (next address >= offset inside System RAM)
 * and SEEK_HOLE (end of the run of RAM holding offset, or offset itself in a
 * hole).  SEEK_DATA/SEEK_HOLE answer from iomem only; a page that fails the
 * per-page checks (offline, poisoned, ...) still shows up as data and fails
 * with -EIO when read: SEEK_DATA does not skip it.
 * A negative or overflowing result is -EINVAL; SEEK_DATA/SEEK_HOLE at or
 * past the end of RAM are -ENXIO, as lseek(2) specifies for files.
 * Concurrent seeks on one file description race like on any file; f_pos is
 * a plain value and read() never trusts it beyond its own call.
 */
static loff_t memdump_llseek(struct file *file, loff_t offset, int whence)
{
	struct memdump_range range;
	loff_t base, pos;
	int ret;

	switch (whence) {
	case SEEK_SET:
		base = 0;
		break;
	case SEEK_CUR:
		base = file->f_pos;
		break;
	case SEEK_END:
		base = (loff_t)memdump_ram_end();
		break;
	case SEEK_DATA:
	case SEEK_HOLE:
		if (offset < 0)
			return -EINVAL;
		if (whence == SEEK_DATA) {
			ret = memdump_ram_find(offset, &range);
			if (ret)
				return -ENXIO;
			offset = range.start;
		} else {
			ret = memdump_ram_run(offset, &range);
			if (ret == -ENOENT)
				return -ENXIO;
			if (!ret)
				offset = range.end;
			/* -ENXIO from memdump_ram_run: in a hole, stay there. */
		}
		base = 0;
		break;
	default:
		return -EINVAL;
	}
	if (check_add_overflow(base, offset, &pos))
		return -EINVAL;
	return vfs_setpos(file, pos, MAX_LFS_FILESIZE);
}

/*
 * Bounce buffer of one read() call: up to 1 << MEMDUMP_BOUNCE_ORDER pages
 * (no more than the read needs) when the allocator has them at hand, with
 * no reclaim or compaction for them, else a single page.  Per call rather
 * than per open because threads may pread() one file description
 * concurrently.
 */
#define MEMDUMP_BOUNCE_ORDER 4

static void *memdump_bounce_alloc(size_t count, unsigned int *order)
{
	void *bounce;

	*order = min_t(unsigned int, get_order(count), MEMDUMP_BOUNCE_ORDER);
	if (*order) {
		bounce = (void *)__get_free_pages((GFP_KERNEL | __GFP_COMP | __GFP_NOWARN) &
						  ~__GFP_DIRECT_RECLAIM, *order);
		if (bounce)
			return bounce;
		*order = 0;
	}
	return (void *)__get_free_page(GFP_KERNEL);
}

/*
 * Check and copy [pos, pos + len) of one System RAM range into @bounce,
 * page by page; stop at the first page that must not be read (-EIO from
 * memdump_page_get()) or at a machine check / fault in the copy (-EIO).
 *
 * Everything happens with PageOffline() writers held off
 * (memdump_offline_begin(), which sleeps, so it comes first) and inside
 * rcu_read_lock() (which memory offlining waits for, see memdump_ram.c): a
 * page checked here cannot be unplugged, offlined or removed before its
 * copy is done.
 * Nothing in here sleeps; copy_to_user() comes after, with both dropped.
 *
 * The locks are taken once per batch (up to the bounce buffer's size, 64
 * KiB), not per page: the page_offline rwsem is taken for writing, so
 * concurrent readers (and /proc/kcore readers) serialise on it.  Measured
 * under QEMU/TCG (6.1 guest, the tier's fuzz: three concurrent readers,
 * 100k random reads, 4.6 GB): no lock 8.5 s, lock per page 20.5 s, lock
 * per batch 10.2 s; a single sequential 1.2 GiB dump took 9 s in all three.
 * A virtio-mem (un)plug waits for at most one batch.
 *
 * Return: bytes copied to @bounce; *@err is 0 or -EIO when that is < @len.
 */
static size_t memdump_fill(void *bounce, u64 pos, size_t len, int *err)
{
	size_t filled = 0;

	*err = 0;
	memdump_offline_begin();
	rcu_read_lock();
	while (filled < len) {
		unsigned int offset = offset_in_page(pos + filled);
		size_t chunk = min_t(size_t, PAGE_SIZE - offset, len - filled);
		struct page *page;
		size_t got;

		*err = memdump_page_get(pos + filled, &page);
		if (*err)
			break;
		got = memdump_copy_from_page(bounce + filled, page, offset, chunk);
		filled += got;
		if (got < chunk) {
			/* Machine check or fault inside this page. */
			*err = -EIO;
			break;
		}
	}
	rcu_read_unlock();
	memdump_offline_end();
	return filled;
}

/*
 * read(): copy physical memory [*ppos, *ppos + count) batch by batch.  A
 * batch stays inside one System RAM range and fits the bounce buffer; it
 * is checked and copied machine-check-safely by memdump_fill(), then
 * copied to user space.  The range is looked up once for *ppos and again
 * only when the read crosses its end (one walk of the resource tree each,
 * never a merge of the whole run).
 */
static ssize_t memdump_read(struct file *file, char __user *buf, size_t count,
			    loff_t *ppos)
{
	struct memdump_range range = { 0, 0 };
	size_t copied = 0, bounce_size;
	unsigned int order;
	void *bounce;
	u64 pos;
	int ret = 0;

	if (*ppos < 0)
		return -EINVAL;
	if (!count)
		return 0;
	count = min_t(size_t, count, MEMDUMP_MAX_READ);
	pos = *ppos;

	bounce = memdump_bounce_alloc(count, &order);
	if (!bounce)
		return -ENOMEM;
	bounce_size = PAGE_SIZE << order;

	while (copied < count) {
		size_t want, filled, left;

		if (pos >= range.end) {
			ret = memdump_ram_find(pos, &range);
			if (ret) {
				/* Above all RAM: end of file. */
				ret = 0;
				break;
			}
			if (range.start != pos) {
				/* In a hole: never touch it. */
				ret = -ENXIO;
				break;
			}
		}

		want = min_t(u64, count - copied, range.end - pos);
		want = min(want, bounce_size);
		filled = memdump_fill(bounce, pos, want, &ret);

		left = filled ? copy_to_user(buf + copied, bounce, filled) : 0;
		copied += filled - left;
		pos += filled - left;
		if (left)
			ret = -EFAULT;
		if (ret)
			break;

		if (copied < count) {
			/*
			 * Long reads must stay killable and must not hog the
			 * CPU (a non-preemptible kernel would stall for the
			 * whole 2 MiB under emulation).
			 */
			if (fatal_signal_pending(current)) {
				ret = -EINTR;
				break;
			}
			cond_resched();
		}
	}

	free_pages((unsigned long)bounce, order);
	/*
	 * Something copied: report it (short if we stopped early); the
	 * reason comes back on the next read, which starts right there.
	 */
	if (!copied)
		return ret;
	*ppos = pos;
	return copied;
}

static const struct file_operations memdump_fops = {
	.owner = THIS_MODULE,
	.open = memdump_open,
	.llseek = memdump_llseek,
	.read = memdump_read,
};

/*
 * Mode 0400 on the node devtmpfs creates: root may read, nobody may write.
 * udev rules can still widen it; open() checks the capability regardless.
 */
static struct miscdevice memdump_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = MEMDUMP_NAME,
	.fops = &memdump_fops,
	.mode = 0400,
};

static int __init memdump_init(void)
{
	int ret;

	ret = memdump_ram_init();
	if (ret)
		return ret;
	ret = misc_register(&memdump_misc);
	if (ret) {
		pr_err("cannot register /dev/%s: %d\n", MEMDUMP_NAME, ret);
		memdump_ram_exit();
		return ret;
	}
	pr_info("/dev/%s ready (System RAM below %#llx; copy: %s)\n",
		MEMDUMP_NAME, (unsigned long long)memdump_ram_end(),
		memdump_copy_method());
	if (!memdump_copy_mc_usable()) {
		if (allow_unsafe_copy)
			pr_warn("allow_unsafe_copy=1: reads are not machine-check safe; an uncorrectable memory error met while reading panics the machine\n");
		else
			pr_warn("no machine-check-safe copy on this CPU/kernel: open() is refused unless allow_unsafe_copy=1 (then an uncorrectable memory error met while reading panics the machine)\n");
	}
	return 0;
}

/*
 * Unload cannot race a reader: .owner pins the module while any file is
 * open, so rmmod fails with EBUSY until the last close.
 */
static void __exit memdump_exit(void)
{
	misc_deregister(&memdump_misc);
	memdump_ram_exit();
	pr_info("/dev/%s removed\n", MEMDUMP_NAME);
}

module_init(memdump_init);
module_exit(memdump_exit);

/*
 * GPL: walk_iomem_res_desc, copy_mc_to_kernel, pfn_to_online_page,
 * lookup_address and synchronize_rcu are GPL-only.
 */
MODULE_LICENSE("GPL");
MODULE_AUTHOR("memdump project");
MODULE_DESCRIPTION("Read-only access to physical System RAM for memory acquisition");
MODULE_VERSION(MEMDUMP_VERSION);
