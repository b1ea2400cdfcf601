/* A slow disk for Redis's AOF, loaded with LD_PRELOAD (tests/reliability/test_aof_slow_disk.py): every
 * fdatasync (Redis's fsync on Linux) waits SLOW_FSYNC_US first. No headers, no C runtime: built with
 * `cc -shared -fPIC -nostdlib`, its two calls resolve in the libc Redis has loaded. */
#define RTLD_NEXT ((void *) -1l)
#define SLOW_FSYNC_US 300000
extern void *dlsym(void *handle, const char *symbol);
extern int usleep(unsigned int microseconds);

int fdatasync(int fd) {
    static int (*real)(int) = 0;
    if (!real) real = (int (*)(int)) dlsym(RTLD_NEXT, "fdatasync");
    usleep(SLOW_FSYNC_US);
    return real(fd);
}
