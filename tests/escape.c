/* Escape attempts from inside a container (tests/test_isolation.py): one line per
 * attempt, "NAME ok" or "NAME errno=N". Built static by the suite with gcc. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/reboot.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static void report(const char *name, long ret) {
    if (ret < 0) printf("%s errno=%d\n", name, errno);
    else printf("%s ok\n", name);
}

static long shocker(const char *path) {      /* the host's root: ext4 inode 2 */
    struct { unsigned int bytes; int type; unsigned int ino, gen; } h = {8, 1, 2, 0};
    int fd = path[0] == '/' ? open(path, O_RDONLY) : atoi(path);
    if (fd < 0) return -1;
    return syscall(SYS_open_by_handle_at, fd, &h, O_RDONLY);
}

static long write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY);
    if (fd < 0) return -1;
    return write(fd, text, strlen(text));
}

int main(int argc, char **argv) {
    struct timespec now;
    struct timeval tv;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (!strncmp(a, "shocker:", 8)) report(a, shocker(a + 8));
        else if (!strcmp(a, "core_pattern")) report(a, write_file("/proc/sys/kernel/core_pattern", "|/tmp/x"));
        else if (!strcmp(a, "sysrq")) report(a, write_file("/proc/sysrq-trigger", "h"));
        else if (!strcmp(a, "mount")) report(a, mount("none", "/tmp", "tmpfs", 0, NULL));
        else if (!strcmp(a, "ptrace1")) report(a, ptrace(PTRACE_ATTACH, 1, 0, 0));
        else if (!strcmp(a, "mem1")) report(a, open("/proc/1/mem", O_RDWR));
        else if (!strcmp(a, "init_module")) report(a, syscall(SYS_init_module, "", 0, ""));
        else if (!strcmp(a, "finit_module")) report(a, syscall(SYS_finit_module, 0, "", 0));
        else if (!strncmp(a, "disk:", 5)) {          /* disk:MAJOR:MINOR */
            unsigned maj, min;
            sscanf(a + 5, "%u:%u", &maj, &min);
            unlink("/tmp/disk");
            report("mknod", mknod("/tmp/disk", S_IFBLK | 0600, makedev(maj, min)));
            report(a, open("/tmp/disk", O_RDONLY));
        }
        else if (!strcmp(a, "reboot")) report(a, syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_POWER_OFF, 0));
        else if (!strcmp(a, "settimeofday")) { gettimeofday(&tv, NULL); report(a, settimeofday(&tv, NULL)); }
        else if (!strcmp(a, "clock_settime")) { clock_gettime(CLOCK_REALTIME, &now); report(a, clock_settime(CLOCK_REALTIME, &now)); }
        else if (!strcmp(a, "unshare")) report(a, unshare(CLONE_NEWUSER));
        else if (!strcmp(a, "kcore")) {
            char buf[16];
            int fd = open("/proc/kcore", O_RDONLY);
            report(a, fd < 0 ? -1 : read(fd, buf, sizeof buf));
        }
        else printf("%s unknown\n", a);
    }
    return 0;
}
