/* Loaded with LD_PRELOAD, makes a program's zero-copy calls fail as they do on a device whose
 * driver cannot splice (memdump's module device, /proc/kcore, a real /dev/mem): sendfile,
 * splice and copy_file_range return -1 with errno EINVAL, so the program falls back to
 * read() and write(). bench/run builds it with gcc into its work directory. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/sendfile.h>
#include <sys/types.h>
#include <unistd.h>

static ssize_t refused(void)
{
    errno = EINVAL;
    return -1;
}

ssize_t sendfile(int out_fd, int in_fd, off_t *offset, size_t count)
{
    (void)out_fd; (void)in_fd; (void)offset; (void)count;
    return refused();
}

ssize_t sendfile64(int out_fd, int in_fd, off64_t *offset, size_t count)
{
    (void)out_fd; (void)in_fd; (void)offset; (void)count;
    return refused();
}

ssize_t splice(int fd_in, off64_t *off_in, int fd_out, off64_t *off_out, size_t len, unsigned int flags)
{
    (void)fd_in; (void)off_in; (void)fd_out; (void)off_out; (void)len; (void)flags;
    return refused();
}

ssize_t copy_file_range(int fd_in, off64_t *off_in, int fd_out, off64_t *off_out, size_t len,
                        unsigned int flags)
{
    (void)fd_in; (void)off_in; (void)fd_out; (void)off_out; (void)len; (void)flags;
    return refused();
}
