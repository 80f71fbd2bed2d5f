// SPDX-License-Identifier: GPL-2.0
/*
 * memdump_main.c - the /dev/memdump misc device: physical RAM, read-only.
 *
 * The file offset is the physical address.  Only System RAM can be read
 * (see memdump_ram.c for the rules and memdump.h for the errno contract);
 * device memory is never mapped or touched, so a reader cannot hang a
 * machine the way a blind /dev/mem scan can.
 *
 * The file operations are deliberately few: open, release, llseek, read.
 * No write, no mmap, no ioctl: nothing here can change memory or read an
 * arbitrary kernel virtual address.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/capability.h>
#include <linux/fs.h>
#include <linux/gfp.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/overflow.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/security.h>
#include <linux/uaccess.h>

#include "memdump.h"
#include "memdump_compat.h"

/*
 * open() rules:
 *  - read-only: a write open fails with -EPERM before anything else, so
 *    the answer does not depend on privileges (there is nothing to write);
 *  - CAP_SYS_RAWIO, the capability /dev/mem asks for: a root process that
 *    dropped it gets -EPERM even though the node's mode lets it open;
 *  - kernel lockdown: reading all of RAM is what /proc/kcore offers, so
 *    obey the same lockdown reason (confidentiality mode refuses it).
 * The node itself is 0400 root, so other users get -EACCES from the VFS
 * before this function runs.
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
	return 0;
}

static int memdump_release(struct inode *inode, struct file *file)
{
	return 0;
}

/*
 * Seeking: SEEK_SET, SEEK_CUR, SEEK_END (relative to the end of the highest
 * System RAM range), SEEK_DATA (next address >= offset inside System RAM)
 * and SEEK_HOLE (end of the run of RAM holding offset, or offset itself in a
 * hole).  SEEK_DATA/SEEK_HOLE answer from iomem only; a page that fails the
 * per-page checks still shows up as data and fails with -EIO when read.
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
 * read(): copy physical memory [*ppos, *ppos + count) page chunk by page
 * chunk.  Each chunk stays inside one page and one RAM run, is checked, is
 * copied machine-check-safely into a bounce page of this call (so readers
 * never share a buffer), then copied to user space.  The bounce page is
 * per call rather than per open because threads may pread() one file
 * description concurrently.
 */
static ssize_t memdump_read(struct file *file, char __user *buf, size_t count,
			    loff_t *ppos)
{
	struct memdump_range run = { 0, 0 };
	size_t copied = 0;
	void *bounce;
	u64 pos;
	int ret = 0;

	if (*ppos < 0)
		return -EINVAL;
	if (!count)
		return 0;
	count = min_t(size_t, count, MEMDUMP_MAX_READ);
	pos = *ppos;

	bounce = (void *)__get_free_page(GFP_KERNEL);
	if (!bounce)
		return -ENOMEM;

	while (copied < count) {
		struct page *page;
		size_t chunk, got;
		unsigned int offset;

		if (pos >= run.end) {
			ret = memdump_ram_run(pos, &run);
			if (ret == -ENOENT) {
				/* Above all RAM: end of file. */
				ret = 0;
				break;
			}
			if (ret) {
				/* In a hole: never touch it. */
				ret = -EFAULT;
				break;
			}
		}

		offset = offset_in_page(pos);
		chunk = min_t(u64, PAGE_SIZE - offset, count - copied);
		chunk = min_t(u64, chunk, run.end - pos);

		/*
		 * Check and copy under the RCU read lock: memory hot-remove
		 * frees a section's memmap only after an RCU grace period
		 * (the pfn_valid() race fix), so the struct page tested here
		 * stays valid until the copy is done; the copy itself is
		 * fault-safe should the direct map go away first.  Nothing in
		 * between sleeps; copy_to_user() comes after the unlock.
		 */
		rcu_read_lock();
		ret = memdump_page_get(pos, &page);
		got = ret ? 0 : memdump_copy_from_page(bounce, page, offset, chunk);
		rcu_read_unlock();
		if (ret)
			break;

		if (got && copy_to_user(buf + copied, bounce, got)) {
			ret = -EFAULT;
			break;
		}
		copied += got;
		pos += got;
		if (got < chunk) {
			/* Machine check or fault inside this chunk. */
			ret = -EIO;
			break;
		}

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

	free_page((unsigned long)bounce);
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
	.release = memdump_release,
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

	ret = misc_register(&memdump_misc);
	if (ret) {
		pr_err("cannot register /dev/%s: %d\n", MEMDUMP_NAME, ret);
		return ret;
	}
	pr_info("/dev/%s ready (System RAM below %#llx; copy: %s)\n",
		MEMDUMP_NAME, (unsigned long long)memdump_ram_end(),
		memdump_copy_method());
	return 0;
}

/*
 * Unload cannot race a reader: .owner pins the module while any file is
 * open, so rmmod fails with EBUSY until the last close.
 */
static void __exit memdump_exit(void)
{
	misc_deregister(&memdump_misc);
	pr_info("/dev/%s removed\n", MEMDUMP_NAME);
}

module_init(memdump_init);
module_exit(memdump_exit);

/* GPL: walk_iomem_res_desc, copy_mc_to_kernel, pfn_to_online_page are GPL-only. */
MODULE_LICENSE("GPL");
MODULE_AUTHOR("memdump project");
MODULE_DESCRIPTION("Read-only access to physical System RAM for memory acquisition");
MODULE_VERSION(MEMDUMP_VERSION);
