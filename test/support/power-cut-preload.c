/*
 * Power cut emulation for tests, loaded with LD_PRELOAD into a process whose files live in
 * $HERALD_POWER_CUT_DIR. Every fsync/fdatasync of a regular file in that directory, once the real call
 * has returned, copies the file's contents to $HERALD_POWER_CUT_DIR/.synced/<name>: what a disk would
 * hold after a power cut that drops every write not yet fsync'd. unlink() of such a file removes its
 * copy too. After the process is SIGKILLed, test/support/power-cut.ts puts the directory back to the
 * copies (a file without one is removed): the state after a power cut at that moment.
 * Built by the test with `cc -shared -fPIC`; it changes nothing else the process does.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_unlink)(const char *);

/* Writes the copy's path for `path` into `out`, or returns 0 if `path` is not a watched file. */
static int synced_path (const char *path, char *out, size_t size) {
  const char *dir = getenv("HERALD_POWER_CUT_DIR");
  if (dir == NULL) return 0;
  size_t n = strlen(dir);
  if (strncmp(path, dir, n) != 0 || path[n] != '/') return 0;
  const char *name = path + n + 1;
  if (strchr(name, '/') != NULL || name[0] == '.') return 0;
  return snprintf(out, size, "%s/.synced/%s", dir, name) < (int)size;
}

static void snapshot (int fd) {
  char link[64], path[PATH_MAX], copy[PATH_MAX + 64], tmp[PATH_MAX + 80];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t len = readlink(link, path, sizeof path - 1);
  if (len <= 0) return;
  path[len] = 0;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return;
  if (!synced_path(path, copy, sizeof copy)) return;
  snprintf(tmp, sizeof tmp, "%s.tmp", copy);
  int in = open(path, O_RDONLY | O_CLOEXEC);
  if (in < 0) abort();
  int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out < 0) abort();
  char buf[65536];
  ssize_t r;
  while ((r = read(in, buf, sizeof buf)) > 0) {
    if (write(out, buf, (size_t)r) != r) abort();
  }
  if (r < 0) abort();
  close(in);
  close(out);
  /* rename is atomic: a SIGKILL during the copy leaves the previous copy */
  if (rename(tmp, copy) != 0) abort();
}

int fsync (int fd) {
  if (real_fsync == NULL) real_fsync = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
  int r = real_fsync(fd);
  if (r == 0) snapshot(fd);
  return r;
}

int fdatasync (int fd) {
  if (real_fdatasync == NULL) real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
  int r = real_fdatasync(fd);
  if (r == 0) snapshot(fd);
  return r;
}

int unlink (const char *path) {
  if (real_unlink == NULL) real_unlink = (int (*)(const char *))dlsym(RTLD_NEXT, "unlink");
  int r = real_unlink(path);
  char copy[PATH_MAX + 64];
  if (r == 0 && synced_path(path, copy, sizeof copy)) real_unlink(copy);
  return r;
}
