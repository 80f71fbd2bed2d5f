/*
 * mdtool - static helper run inside the real-kernel test guest.
 *
 * Built on the host with `gcc -static -O2 -pthread` and run from the
 * writable 9p share, so it needs nothing from the guest but the kernel.
 *
 *   mdtool open-checks DEV
 *       device node mode/owner, write opens, capability and uid checks,
 *       no mmap / no ioctl / no write.
 *   mdtool fuzz DEV READS SEED OUTDIR [SECONDS]
 *       random reads over the whole physical address space and beyond,
 *       odd seeks, a second thread on the same fd and a second process;
 *       every return value is checked against /proc/iomem, every byte read
 *       inside "Kernel code" against a reference copy (OUTDIR/kcode.bin,
 *       which the host checks against guest RAM), every byte read inside a
 *       pattern page this process owns against the pattern.
 *       Writes OUTDIR/fuzz.txt (key=value summary + ERR lines).
 *   mdtool pattern OUTFILE STOPFILE
 *       fill and mlock a page with a known pattern, write its physical
 *       address to OUTFILE, stay alive until STOPFILE exists.
 *   mdtool devmem OUTFILE
 *       how /dev/mem behaves (CONFIG_STRICT_DEVMEM): key=value lines.
 *   mdtool secret DEV
 *       a memfd_secret page (removed from the kernel's direct map) must be
 *       refused with EIO, and a read running into it must stop short.
 *   mdtool readat DEV OFFSET LENGTH
 *       one pread; prints "ret=N errno=E".
 *
 * Exit status 0 means every check passed; the files say what failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/capability.h>

#define PAGE 4096ULL
#define MAX_READ (2ULL << 20) /* the module's per-call cap, MEMDUMP_MAX_READ */
#define MAX_RANGES 256

typedef unsigned long long u64;

/* ------------------------------------------------------------------ */
/* /proc/iomem                                                         */

struct range {
	u64 start, end; /* half-open */
};

static struct range ram[MAX_RANGES]; /* merged runs of System RAM */
static int nram;
static struct range kcode;            /* "Kernel code" */
static u64 ram_end;                    /* end of highest RAM */

static int cmp_range(const void *a, const void *b)
{
	const struct range *x = a, *y = b;
	return x->start < y->start ? -1 : x->start > y->start;
}

static int load_iomem(void)
{
	FILE *f = fopen("/proc/iomem", "r");
	char line[512];
	struct range raw[MAX_RANGES];
	int n = 0, i;

	if (!f) {
		perror("/proc/iomem");
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		u64 s, e;
		char *p = line, *name;
		while (*p == ' ')
			p++;
		if (sscanf(p, "%llx-%llx", &s, &e) != 2)
			continue;
		name = strstr(p, " : ");
		if (!name)
			continue;
		name += 3;
		name[strcspn(name, "\n")] = 0;
		if (!strncmp(name, "System RAM", 10)) {
			if (n < MAX_RANGES)
				raw[n++] = (struct range){ s, e + 1 };
		} else if (!strcmp(name, "Kernel code")) {
			kcode = (struct range){ s, e + 1 };
		}
	}
	fclose(f);
	qsort(raw, n, sizeof(raw[0]), cmp_range);
	nram = 0;
	for (i = 0; i < n; i++) {
		if (nram && raw[i].start <= ram[nram - 1].end) {
			if (raw[i].end > ram[nram - 1].end)
				ram[nram - 1].end = raw[i].end;
		} else {
			ram[nram++] = raw[i];
		}
	}
	ram_end = nram ? ram[nram - 1].end : 0;

	if (!nram || !kcode.end) {
		fprintf(stderr, "iomem: no System RAM or no Kernel code (not root?)\n");
		return -1;
	}
	return 0;
}

/*
 * Pages the module must refuse with EIO, from /proc/kpageflags: no memmap
 * (NOPAGE), hardware-poisoned, or logically offline (balloon, virtio-mem
 * unplugged).  One byte per page frame below ram_end; NULL without root.
 */
#define KPF_HWPOISON 19
#define KPF_NOPAGE 20
#define KPF_OFFLINE 23
static unsigned char *unreadable;
static u64 n_unreadable;
static u64 edges[4096]; /* addresses where readability changes inside RAM */
static int nedges;

static void load_kpageflags(void)
{
	int fd = open("/proc/kpageflags", O_RDONLY);
	u64 pfns = ram_end / PAGE + 1, flags[512];
	int i;

	if (fd < 0)
		return;
	unreadable = calloc(pfns, 1);
	if (!unreadable) {
		close(fd);
		return;
	}
	for (i = 0; i < nram; i++) {
		u64 pfn = ram[i].start / PAGE, last = (ram[i].end - 1) / PAGE;

		while (pfn <= last) {
			u64 n = last - pfn + 1 < 512 ? last - pfn + 1 : 512, k;
			ssize_t got = pread(fd, flags, n * 8, (off_t)(pfn * 8));

			if (got <= 0)
				break;
			for (k = 0; k < (u64)got / 8; k++) {
				if (flags[k] & ((1ULL << KPF_HWPOISON) | (1ULL << KPF_NOPAGE) | (1ULL << KPF_OFFLINE))) {
					unreadable[pfn + k] = 1;
					n_unreadable++;
				}
				if (pfn + k > ram[i].start / PAGE && unreadable[pfn + k] != unreadable[pfn + k - 1] &&
				    nedges < (int)(sizeof(edges) / sizeof(edges[0])))
					edges[nedges++] = (pfn + k) * PAGE;
			}
			pfn += got / 8;
		}
	}
	close(fd);
}

/* The run of RAM holding addr, or NULL for a hole. */
static const struct range *ram_at(u64 addr)
{
	int i;

	for (i = 0; i < nram; i++)
		if (addr >= ram[i].start && addr < ram[i].end)
			return &ram[i];
	return NULL;
}

/* ------------------------------------------------------------------ */
/* small things                                                        */

static u64 rng_state;

static u64 rnd64(u64 *s)
{
	/* xorshift64*: fast and good enough to pick offsets */
	u64 x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1DULL;
}

static u64 rnd_below(u64 *s, u64 n)
{
	return n ? rnd64(s) % n : 0;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static u64 pattern_word(u64 phys_word_index)
{
	return 0x4d454d44554d5021ULL ^ (phys_word_index * 0x9E3779B97F4A7C15ULL);
}

/* Fill a page with the pattern, lock it, find its physical address. */
static int pattern_page(unsigned char **pagep, u64 *physp)
{
	unsigned char *pg;
	u64 entry, i;
	int fd;

	pg = mmap(NULL, PAGE, PROT_READ | PROT_WRITE,
		  MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (pg == MAP_FAILED)
		return -1;
	for (i = 0; i < PAGE / 8; i++)
		((u64 *)pg)[i] = pattern_word(i);
	if (mlock(pg, PAGE))
		return -1;
	fd = open("/proc/self/pagemap", O_RDONLY);
	if (fd < 0)
		return -1;
	if (pread(fd, &entry, 8, ((uintptr_t)pg / PAGE) * 8) != 8) {
		close(fd);
		return -1;
	}
	close(fd);
	if (!(entry >> 63) || !(entry & ((1ULL << 55) - 1)))
		return -1; /* not present, or PFN hidden (not root) */
	*pagep = pg;
	*physp = (entry & ((1ULL << 55) - 1)) * PAGE;
	return 0;
}

/* ------------------------------------------------------------------ */
/* open-checks                                                         */

static int failures;

static void check(int ok, const char *fmt, ...)
{
	va_list ap;

	printf("%s ", ok ? "ok" : "FAIL");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	if (!ok)
		failures++;
}

/* Run fn in a child; return the errno it reports (0 = open worked). */
static int in_child(int (*fn)(const char *), const char *dev)
{
	pid_t pid = fork();
	int st;

	if (pid == 0)
		_exit(fn(dev));
	if (pid < 0 || waitpid(pid, &st, 0) < 0 || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

static int open_errno(const char *dev)
{
	int fd = open(dev, O_RDONLY);

	if (fd >= 0) {
		close(fd);
		return 0;
	}
	return errno;
}

static int child_no_rawio(const char *dev)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];

	if (syscall(SYS_capget, &h, d))
		return 254;
	d[CAP_SYS_RAWIO / 32].effective &= ~(1U << (CAP_SYS_RAWIO % 32));
	d[CAP_SYS_RAWIO / 32].permitted &= ~(1U << (CAP_SYS_RAWIO % 32));
	if (syscall(SYS_capset, &h, d))
		return 253;
	return open_errno(dev);
}

static int child_nobody(const char *dev)
{
	if (setgroups(0, NULL) || setgid(65534) || setuid(65534))
		return 252;
	return open_errno(dev);
}

static int cmd_open_checks(const char *dev)
{
	struct stat st;
	int fd, e;
	char buf[16];
	void *m;

	if (stat(dev, &st)) {
		check(0, "stat %s: %s", dev, strerror(errno));
		return 1;
	}
	check(S_ISCHR(st.st_mode), "node is a character device");
	check((st.st_mode & 07777) == 0400, "node mode 0%o (want 0400)", st.st_mode & 07777);
	check(st.st_uid == 0 && st.st_gid == 0, "node owner %d:%d (want 0:0)", st.st_uid, st.st_gid);

	fd = open(dev, O_RDONLY);
	check(fd >= 0, "root read-only open (%s)", fd >= 0 ? "opened" : strerror(errno));
	if (fd >= 0) {
		m = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, 0x100000);
		check(m == MAP_FAILED, "mmap refused (%s)", m == MAP_FAILED ? strerror(errno) : "mapped!");
		e = ioctl(fd, 0, 0) < 0 ? errno : 0;
		check(e == ENOTTY, "ioctl refused (%s)", strerror(e));
		e = write(fd, buf, 1) < 0 ? errno : 0;
		check(e == EBADF, "write on read-only fd refused (%s)", strerror(e));
		e = read(fd, buf, 0);
		check(e == 0, "zero-length read returns 0 (%d)", e);
		close(fd);
	}
	fd = open(dev, O_WRONLY);
	e = fd < 0 ? errno : 0;
	check(e == EPERM, "root O_WRONLY open refused with EPERM (%s)", e ? strerror(e) : "opened!");
	if (fd >= 0)
		close(fd);
	fd = open(dev, O_RDWR);
	e = fd < 0 ? errno : 0;
	check(e == EPERM, "root O_RDWR open refused with EPERM (%s)", e ? strerror(e) : "opened!");
	if (fd >= 0)
		close(fd);
	e = in_child(child_no_rawio, dev);
	check(e == EPERM, "root without CAP_SYS_RAWIO refused with EPERM (%s)", e > 0 && e < 250 ? strerror(e) : "opened or setup failed");
	e = in_child(child_nobody, dev);
	check(e == EACCES || e == EPERM, "uid 65534 refused (%s)", e > 0 && e < 250 ? strerror(e) : "opened or setup failed");
	printf("failures=%d\n", failures);
	return failures ? 1 : 0;
}

/* ------------------------------------------------------------------ */
/* fuzz                                                                */

static const char *g_dev;
static unsigned char *kref;          /* reference copy of Kernel code */
static unsigned char *pat;           /* our pattern page */
static u64 pat_phys;
static volatile int stop_threads;

struct stats {
	u64 reads, data_reads, bytes, eof, enxio, efault, einval, eio, eintr, zero;
	u64 short_hole, short_cap, short_eio, kcode_reads, kcode_bytes;
	u64 pattern_reads, mismatches, semantic;
};

static FILE *errf;
static pthread_mutex_t err_lock = PTHREAD_MUTEX_INITIALIZER;
static int nerr_lines;

static void fail(struct stats *st, const char *fmt, ...)
{
	va_list ap;

	st->semantic++;
	pthread_mutex_lock(&err_lock);
	if (nerr_lines++ < 200) {
		fprintf(errf, "ERR ");
		va_start(ap, fmt);
		vfprintf(errf, fmt, ap);
		va_end(ap);
		fprintf(errf, "\n");
		fflush(errf);
	}
	pthread_mutex_unlock(&err_lock);
}

/*
 * What the module must answer for pread(off, len), from iomem alone:
 * >= 0 a byte count (the real one may be shorter only at an -EIO page),
 * or -errno.
 */
static long long expected(u64 off, u64 len)
{
	const struct range *r;
	u64 n;

	if (off > (u64)LLONG_MAX || (len && off + len > (u64)LLONG_MAX))
		return -EINVAL; /* the VFS refuses loff_t overflow */
	if (!len)
		return 0;
	if (off >= ram_end)
		return 0;
	r = ram_at(off);
	if (!r)
		return -ENXIO; /* a hole: not System RAM */
	n = len < MAX_READ ? len : MAX_READ;
	if (n > r->end - off)
		n = r->end - off;
	if (unreadable) {
		u64 pfn = off / PAGE, last = (off + n - 1) / PAGE;

		for (; pfn <= last; pfn++) {
			if (unreadable[pfn]) {
				if (pfn == off / PAGE)
					return -EIO;
				return pfn * PAGE - off; /* short: stops at the page */
			}
		}
	}
	return n;
}

/* Compare returned bytes with what we know: kernel code and our pattern. */
static void verify_bytes(struct stats *st, u64 off, const unsigned char *buf, u64 n)
{
	u64 s, e;

	s = off > kcode.start ? off : kcode.start;
	e = off + n < kcode.end ? off + n : kcode.end;
	if (s < e) {
		st->kcode_reads++;
		st->kcode_bytes += e - s;
		if (memcmp(buf + (s - off), kref + (s - kcode.start), e - s)) {
			st->mismatches++;
			fail(st, "kernel code mismatch read off=0x%llx len=%llu overlap 0x%llx-0x%llx", off, n, s, e);
		}
	}
	if (pat) {
		s = off > pat_phys ? off : pat_phys;
		e = off + n < pat_phys + PAGE ? off + n : pat_phys + PAGE;
		if (s < e) {
			st->pattern_reads++;
			if (memcmp(buf + (s - off), pat + (s - pat_phys), e - s)) {
				st->mismatches++;
				fail(st, "pattern page mismatch read off=0x%llx len=%llu", off, n);
			}
		}
	}
}

/* One checked read; use_seek = lseek+read instead of pread. */
static void one_read(int fd, struct stats *st, u64 off, u64 len, unsigned char *buf, int use_seek)
{
	long long want = expected(off, len);
	ssize_t got;
	int e = 0;

	st->reads++;
	if (use_seek && off <= (u64)LLONG_MAX) {
		if (lseek(fd, (off_t)off, SEEK_SET) != (off_t)off) {
			fail(st, "lseek SEEK_SET 0x%llx: %s", off, strerror(errno));
			return;
		}
		got = read(fd, buf, len);
	} else {
		got = pread(fd, buf, len, (off_t)off);
	}
	if (got < 0)
		e = errno;

	if (got < 0) {
		switch (e) {
		case ENXIO: st->enxio++; break;
		case EFAULT: st->efault++; break;
		case EINVAL: st->einval++; break;
		case EIO: st->eio++; break;
		case EINTR: st->eintr++; break;
		}
		if (want == -e)
			return;
		fail(st, "off=0x%llx len=%llu: got errno %d (%s), want %lld", off, len, e, strerror(e), want);
		return;
	}
	if (got == 0) {
		if (len == 0)
			st->zero++;
		else
			st->eof++;
	} else {
		st->data_reads++;
		st->bytes += got;
	}
	if (want < 0) {
		fail(st, "off=0x%llx len=%llu: got %zd bytes, want errno %lld", off, len, got, -want);
		return;
	}
	if (got > want) {
		fail(st, "off=0x%llx len=%llu: got %zd bytes, more than %lld", off, len, got, want);
		return;
	}
	if (got < want) {
		ssize_t r2 = pread(fd, buf + got, 1, (off_t)(off + got));

		fail(st, "off=0x%llx len=%llu: short %zd < %lld (next byte: %zd, errno %d)",
		     off, len, got, want, r2, r2 < 0 ? errno : 0);
	} else if ((u64)got < len && got > 0) {
		u64 at = off + got;

		if ((u64)got == MAX_READ)
			st->short_cap++;
		else if (unreadable && at < ram_end && ram_at(at) && unreadable[at / PAGE])
			st->short_eio++;
		else
			st->short_hole++;
	}
	if (use_seek && got >= 0) {
		off_t cur = lseek(fd, 0, SEEK_CUR);
		if (cur != (off_t)(off + got))
			fail(st, "file position 0x%llx after read at 0x%llx of %zd", (u64)cur, off, got);
	}
	if (got > 0)
		verify_bytes(st, off, buf, got);
}

static u64 pick_len(u64 *s)
{
	u64 r = rnd_below(s, 1000);

	if (r < 20)
		return 0;
	if (r < 250)
		return 1 + rnd_below(s, 64);
	if (r < 550)
		return 1 + rnd_below(s, PAGE);
	if (r < 850)
		return 1 + rnd_below(s, 64 * 1024);
	if (r < 960)
		return 1 + rnd_below(s, 512 * 1024);
	if (r < 995)
		return 1 + rnd_below(s, MAX_READ);
	return MAX_READ + rnd_below(s, MAX_READ); /* above the cap */
}

static u64 pick_off(u64 *s)
{
	u64 r = rnd_below(s, 1000);
	const struct range *rg;

	if (r < 200) /* anywhere up to a bit past the end of RAM */
		return rnd_below(s, ram_end + (64ULL << 20));
	if (r < 350) { /* near a RAM boundary */
		rg = &ram[rnd_below(s, nram)];
		return (rnd64(s) & 1 ? rg->start : rg->end) - 8192 + rnd_below(s, 16384);
	}
	if (r < 400) /* near a page boundary inside RAM */
		return (ram[rnd_below(s, nram)].start & ~(PAGE - 1)) + rnd_below(s, 16) * PAGE - 64 + rnd_below(s, 128);
	if (r < 450) /* the whole 64-bit space, incl. loff_t overflow */
		return rnd64(s) >> rnd_below(s, 20);
	if (r < 470) /* right below LLONG_MAX */
		return (u64)LLONG_MAX - rnd_below(s, 4 * MAX_READ);
	if (r < 700) /* inside kernel code: bytes we can verify */
		return kcode.start + rnd_below(s, kcode.end - kcode.start);
	if (r < 750 && pat) /* around our pattern page */
		return pat_phys - 4096 + rnd_below(s, 3 * PAGE);
	if (r < 800 && nedges) /* around a readable/unreadable page boundary */
		return edges[rnd_below(s, nedges)] - 2 * PAGE + rnd_below(s, 4 * PAGE);
	rg = &ram[rnd_below(s, nram)];
	return rg->start + rnd_below(s, rg->end - rg->start);
}

/* Seek rules, each checked once. */
static void seek_checks(int fd, struct stats *st)
{
	off_t r;
	char c[16];

#define SEEK_EXPECT(expr, want_ret, want_errno, what) do {				\
		errno = 0;									\
		r = (expr);									\
		if (r != (off_t)(want_ret) || (r < 0 && errno != (want_errno)))		\
			fail(st, "seek %s: got %lld errno %d, want %lld errno %d", what,	\
			     (long long)r, errno, (long long)(want_ret), want_errno);	\
	} while (0)

	SEEK_EXPECT(lseek(fd, -1, SEEK_SET), -1, EINVAL, "SET -1");
	SEEK_EXPECT(lseek(fd, LLONG_MIN, SEEK_SET), -1, EINVAL, "SET LLONG_MIN");
	SEEK_EXPECT(lseek(fd, LLONG_MAX, SEEK_SET), LLONG_MAX, 0, "SET LLONG_MAX");
	SEEK_EXPECT(lseek(fd, 1, SEEK_CUR), -1, EINVAL, "CUR overflow");
	SEEK_EXPECT(lseek(fd, 0, SEEK_CUR), LLONG_MAX, 0, "CUR 0 after failed seek");
	errno = 0;
	r = read(fd, c, 1);
	if (!(r < 0 && errno == EINVAL))
		fail(st, "read at LLONG_MAX: got %lld errno %d, want EINVAL", (long long)r, errno);
	SEEK_EXPECT(lseek(fd, 12345, SEEK_SET), 12345, 0, "SET 12345");
	SEEK_EXPECT(lseek(fd, -345, SEEK_CUR), 12000, 0, "CUR -345");
	SEEK_EXPECT(lseek(fd, -12001, SEEK_CUR), -1, EINVAL, "CUR below 0");
	SEEK_EXPECT(lseek(fd, 0, SEEK_END), ram_end, 0, "END 0");
	errno = 0;
	r = read(fd, c, 1);
	if (r != 0)
		fail(st, "read at SEEK_END: got %lld errno %d, want 0 (EOF)", (long long)r, errno);
	SEEK_EXPECT(lseek(fd, -1, SEEK_END), ram_end - 1, 0, "END -1");
	errno = 0;
	r = read(fd, c, sizeof(c));
	if (r != (expected(ram_end - 1, sizeof(c)) < 0 ? -1 : 1) ||
	    (r < 0 && -errno != expected(ram_end - 1, sizeof(c))))
		fail(st, "read at END-1: got %lld errno %d, want %lld", (long long)r, errno,
		     expected(ram_end - 1, sizeof(c)));
	SEEK_EXPECT(lseek(fd, 1 << 20, SEEK_END), ram_end + (1 << 20), 0, "END +1M");
	SEEK_EXPECT(lseek(fd, -(off_t)ram_end - 1, SEEK_END), -1, EINVAL, "END below 0");
	SEEK_EXPECT(lseek(fd, LLONG_MAX, SEEK_END), -1, EINVAL, "END overflow");
	SEEK_EXPECT(lseek(fd, 0, SEEK_DATA), ram[0].start, 0, "DATA 0");
	SEEK_EXPECT(lseek(fd, ram[0].start, SEEK_HOLE), ram[0].end, 0, "HOLE first run");
	SEEK_EXPECT(lseek(fd, ram[0].end, SEEK_HOLE), ram[0].end, 0, "HOLE in a hole");
	if (nram > 1)
		SEEK_EXPECT(lseek(fd, ram[0].end, SEEK_DATA), ram[1].start, 0, "DATA next run");
	SEEK_EXPECT(lseek(fd, ram_end, SEEK_DATA), -1, ENXIO, "DATA at end");
	SEEK_EXPECT(lseek(fd, ram_end, SEEK_HOLE), -1, ENXIO, "HOLE at end");
	SEEK_EXPECT(lseek(fd, -5, SEEK_DATA), -1, EINVAL, "DATA negative");
	SEEK_EXPECT(lseek(fd, 0, 77), -1, EINVAL, "whence 77");
#undef SEEK_EXPECT
}

/* Bad user buffers: fully bad -> EFAULT, half bad -> short count. */
static void buffer_checks(int fd, struct stats *st)
{
	unsigned char *two;
	ssize_t r;
	u64 off = kcode.start & ~(PAGE - 1);

	errno = 0;
	/* raw syscall: the libc wrapper's buffer-size check would object */
	r = syscall(SYS_pread64, fd, (void *)16, 64, (off_t)off);
	if (!(r < 0 && errno == EFAULT))
		fail(st, "read into a bad pointer: got %zd errno %d, want EFAULT", r, errno);
	two = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (two == MAP_FAILED)
		return;
	munmap(two + PAGE, PAGE);
	r = pread(fd, two, 2 * PAGE, (off_t)off);
	if (r != (ssize_t)PAGE)
		fail(st, "read into half-mapped buffer: got %zd errno %d, want %llu", r, errno, PAGE);
	else
		verify_bytes(st, off, two, PAGE);
	munmap(two, PAGE);
}

struct worker {
	pthread_t tid;
	int fd;
	u64 seed;
	struct stats st;
	unsigned char *buf;
};

/* A second thread on the same file description: pread only. */
static void *thread_reader(void *arg)
{
	struct worker *w = arg;

	while (!stop_threads) {
		u64 off = pick_off(&w->seed), len = pick_len(&w->seed);
		one_read(w->fd, &w->st, off, len, w->buf, 0);
	}
	return NULL;
}

/* A second process: sequential whole-RAM sweeps, killed at the end. */
static void process_reader(const char *dev, struct stats *shared)
{
	unsigned char *buf = mmap(NULL, MAX_READ, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int fd = open(dev, O_RDONLY);
	u64 seed = 0x1234567ULL;

	if (fd < 0 || buf == MAP_FAILED)
		_exit(3);
	for (;;) {
		int i;

		for (i = 0; i < nram; i++) {
			u64 off = ram[i].start;

			while (off < ram[i].end) {
				u64 len = 1 + rnd_below(&seed, MAX_READ);
				ssize_t got;

				one_read(fd, shared, off, len, buf, 0);
				got = (ssize_t)expected(off, len);
				off = got > 0 ? off + (u64)got : (off / PAGE + 1) * PAGE;
			}
		}
	}
}

static int cmd_fuzz(const char *dev, u64 nreads, u64 seed, const char *outdir, double max_seconds)
{
	char path[4096];
	struct stats st = { 0 }, *child_st;
	struct worker w = { 0 };
	unsigned char *buf;
	double t0, t1;
	int fd, i;
	pid_t child;
	u64 k, off;
	FILE *out;

	g_dev = dev;
	if (load_iomem())
		return 2;
	load_kpageflags();
	snprintf(path, sizeof(path), "%s/fuzz-errors.txt", outdir);
	errf = fopen(path, "w");
	if (!errf)
		return 2;
	fd = open(dev, O_RDONLY);
	if (fd < 0) {
		perror(dev);
		return 2;
	}
	/* Page-aligned buffers: the fast path of copy_to_user. */
	buf = mmap(NULL, 2 * MAX_READ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	w.buf = mmap(NULL, 2 * MAX_READ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	kref = malloc(kcode.end - kcode.start);
	if (buf == MAP_FAILED || w.buf == MAP_FAILED || !kref)
		return 2;

	/* Reference copy of the kernel text, read in big aligned chunks. */
	for (off = kcode.start; off < kcode.end;) {
		u64 len = kcode.end - off < MAX_READ ? kcode.end - off : MAX_READ;
		ssize_t got = pread(fd, kref + (off - kcode.start), len, (off_t)off);

		if (got <= 0) {
			fprintf(errf, "ERR reading kernel code at 0x%llx: %zd %s\n", off, got, strerror(errno));
			return 2;
		}
		off += got;
	}
	snprintf(path, sizeof(path), "%s/kcode.bin", outdir);
	out = fopen(path, "w");
	if (!out || fwrite(kref, 1, kcode.end - kcode.start, out) != kcode.end - kcode.start)
		return 2;
	fclose(out);

	if (pattern_page(&pat, &pat_phys))
		pat = NULL;

	child_st = mmap(NULL, sizeof(*child_st), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	memset(child_st, 0, sizeof(*child_st));
	child = fork();
	if (child == 0)
		process_reader(dev, child_st);

	w.fd = fd;
	w.seed = seed ^ 0xdeadbeefULL;
	pthread_create(&w.tid, NULL, thread_reader, &w);

	t0 = now();
	seek_checks(fd, &st);
	buffer_checks(fd, &st);
	rng_state = seed ? seed : 1;
	for (k = 0; k < nreads; k++) {
		u64 o = pick_off(&rng_state), l = pick_len(&rng_state);

		/* one in eight: odd seek first (must not disturb the read after) */
		if ((k & 7) == 3)
			lseek(fd, (off_t)(rnd64(&rng_state) >> 1), (int)rnd_below(&rng_state, 5));
		one_read(fd, &st, o, l, buf, (k & 3) == 1);
		if (max_seconds > 0 && (k & 255) == 0 && now() - t0 > max_seconds)
			break;
	}
	t1 = now();
	stop_threads = 1;
	pthread_join(w.tid, NULL);
	kill(child, SIGKILL); /* a fatal signal, probably mid-read */
	waitpid(child, &i, 0);

	snprintf(path, sizeof(path), "%s/fuzz.txt", outdir);
	out = fopen(path, "w");
	if (!out)
		return 2;
#define P(name, s) fprintf(out, "%s=%llu\n", name, (u64)(s))
	P("reads", st.reads);
	P("data_reads", st.data_reads);
	P("bytes", st.bytes);
	P("eof", st.eof);
	P("zero_length", st.zero);
	P("enxio", st.enxio);
	P("efault", st.efault);
	P("einval", st.einval);
	P("eio", st.eio);
	P("short_hole", st.short_hole);
	P("short_cap", st.short_cap);
	P("short_eio", st.short_eio);
	P("kcode_reads", st.kcode_reads);
	P("kcode_bytes", st.kcode_bytes);
	P("pattern_reads", st.pattern_reads);
	P("mismatches", st.mismatches + w.st.mismatches + child_st->mismatches);
	P("errors", st.semantic + w.st.semantic + child_st->semantic);
	P("thread_reads", w.st.reads);
	P("thread_bytes", w.st.bytes);
	P("process_reads", child_st->reads);
	P("process_bytes", child_st->bytes);
	P("ram_end", ram_end);
	P("kcode_start", kcode.start);
	P("kcode_end", kcode.end);
	P("pattern_phys", pat ? pat_phys : 0);
	P("unreadable_pages", n_unreadable);
	P("unreadable_edges", nedges);
	fprintf(out, "seconds=%.2f\n", t1 - t0);
#undef P
	fclose(out);
	fclose(errf);
	return (st.semantic + w.st.semantic + child_st->semantic) ? 1 : 0;
}

/* ------------------------------------------------------------------ */
/* pattern                                                             */

static int cmd_pattern(const char *outfile, const char *stopfile)
{
	unsigned char *pg;
	u64 phys;
	FILE *f;

	if (pattern_page(&pg, &phys)) {
		perror("pattern page");
		return 1;
	}
	f = fopen(outfile, "w");
	if (!f)
		return 1;
	fprintf(f, "phys=0x%llx\n", phys);
	fclose(f);
	while (access(stopfile, F_OK))
		usleep(100000);
	/* Touch it once more so the compiler cannot drop the page. */
	return pg[0] == 0xff && pg[1] == 0xff ? 3 : 0;
}

/* ------------------------------------------------------------------ */
/* secret: a page outside the direct map                               */

#ifndef SYS_memfd_secret
#define SYS_memfd_secret 447
#endif

static int cmd_secret(const char *dev)
{
	int sfd = (int)syscall(SYS_memfd_secret, 0), fd, pm;
	unsigned char *p, buf[64];
	u64 entry, phys;
	ssize_t r;

	if (sfd < 0) {
		printf("secret=unsupported (%s)\n", strerror(errno));
		return 0;
	}
	if (ftruncate(sfd, PAGE))
		return 1;
	p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, sfd, 0);
	if (p == MAP_FAILED)
		return 1;
	memset(p, 0x5a, PAGE); /* faults the page in and takes it out of the direct map */
	pm = open("/proc/self/pagemap", O_RDONLY);
	if (pm < 0 || pread(pm, &entry, 8, ((uintptr_t)p / PAGE) * 8) != 8 || !(entry >> 63)) {
		printf("secret=no-pfn\n");
		return 1;
	}
	phys = (entry & ((1ULL << 55) - 1)) * PAGE;
	fd = open(dev, O_RDONLY);
	if (fd < 0)
		return 1;
	r = pread(fd, buf, sizeof(buf), (off_t)phys);
	printf("secret_start=%s phys=0x%llx\n",
	       r < 0 && errno == EIO ? "ok EIO" : "FAIL", phys);
	r = pread(fd, buf, 32, (off_t)(phys - 16));
	printf("secret_run_into=%s (%zd)\n", r == 16 ? "ok short 16" : "FAIL", r);
	return 0;
}

/* ------------------------------------------------------------------ */
/* devmem: what strict /dev/mem does on this kernel                    */

static void devmem_try(FILE *out, const char *key, u64 off, u64 len)
{
	unsigned char *b = malloc(len);
	int fd = open("/dev/mem", O_RDONLY);
	ssize_t r;
	u64 i, nz = 0, ff = 0;

	if (fd < 0) {
		fprintf(out, "%s=open-%s\n", key, strerror(errno));
		free(b);
		return;
	}
	r = pread(fd, b, len, (off_t)off);
	if (r < 0) {
		fprintf(out, "%s=errno-%s off=0x%llx\n", key, errno == EPERM ? "EPERM" : errno == EFAULT ? "EFAULT" : strerror(errno), off);
	} else {
		for (i = 0; i < (u64)r; i++) {
			nz += b[i] != 0;
			ff += b[i] == 0xff;
		}
		fprintf(out, "%s=read-%zd nonzero=%llu ff=%llu off=0x%llx\n", key, r, nz, ff, off);
	}
	close(fd);
	free(b);
}

/* First leaf iomem entry named like a PCI device ("0000:00:02.0"): a BAR. */
static u64 pci_bar(void)
{
	FILE *f = fopen("/proc/iomem", "r");
	char line[512];
	u64 s, e, found = 0;
	unsigned int d;

	while (f && fgets(line, sizeof(line), f)) {
		char *p = line, *name;

		while (*p == ' ')
			p++;
		name = strstr(p, " : ");
		if (sscanf(p, "%llx-%llx", &s, &e) == 2 && name &&
		    sscanf(name + 3, "%4x:%2x:%2x.%1x", &d, &d, &d, &d) == 4 && s >= 0x100000) {
			found = s;
			break;
		}
	}
	if (f)
		fclose(f);
	return found;
}

static int cmd_devmem(const char *outfile)
{
	FILE *out = fopen(outfile, "w");
	u64 above = 0, bar;
	int i;

	if (!out || load_iomem())
		return 1;
	for (i = 0; i < nram; i++)
		if (ram[i].end > 0x200000) {
			above = ram[i].start > 0x100000 ? ram[i].start : 0x100000;
			break;
		}
	devmem_try(out, "ram_low", ram[0].start, PAGE);
	if (above)
		devmem_try(out, "ram_high", above + PAGE, PAGE);
	/* beyond the end of all RAM: beyond high_memory, so not even tried */
	devmem_try(out, "beyond_ram", (ram_end + PAGE - 1) & ~(PAGE - 1), PAGE);
	devmem_try(out, "vga_window", 0xa0000, PAGE);
	devmem_try(out, "bios_rom", 0xf0000, PAGE);
	bar = pci_bar();
	if (bar)
		devmem_try(out, "pci_bar", bar, PAGE);
	fprintf(out, "kmem=%s\n", access("/dev/kmem", F_OK) ? "absent" : "present");
	fclose(out);
	return 0;
}

/* ------------------------------------------------------------------ */

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 3 && !strcmp(argv[1], "open-checks"))
		return cmd_open_checks(argv[2]);
	if ((argc == 6 || argc == 7) && !strcmp(argv[1], "fuzz"))
		return cmd_fuzz(argv[2], strtoull(argv[3], NULL, 0), strtoull(argv[4], NULL, 0),
				argv[5], argc == 7 ? atof(argv[6]) : 0);
	if (argc == 4 && !strcmp(argv[1], "pattern"))
		return cmd_pattern(argv[2], argv[3]);
	if (argc == 3 && !strcmp(argv[1], "secret"))
		return cmd_secret(argv[2]);
	if (argc == 3 && !strcmp(argv[1], "devmem"))
		return cmd_devmem(argv[2]);
	if (argc == 5 && !strcmp(argv[1], "readat")) {
		u64 off = strtoull(argv[3], NULL, 0), len = strtoull(argv[4], NULL, 0);
		unsigned char *b = malloc(len ? len : 1);
		int fd = open(argv[2], O_RDONLY);
		ssize_t r = fd < 0 ? -1 : pread(fd, b, len, (off_t)off);
		printf("ret=%zd errno=%d\n", r, r < 0 ? errno : 0);
		return r < 0;
	}
	fprintf(stderr, "usage: see the comment at the top of mdtool.c\n");
	return 2;
}
