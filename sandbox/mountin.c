/* mountin.c — STUB, being replaced (helper B). */
#include <errno.h>
#include "sandbox-internal.h"
int sandbox_mount_ro(sandbox *sb, const char *host_dir, const char *name, cx_err *err)
{ (void)sb; (void)host_dir; (void)name; return cx_err_set(err, ENOSYS, "sandbox_mount_ro: stub"); }
int sandbox_umount(sandbox *sb, const char *name, cx_err *err)
{ (void)sb; (void)name; return cx_err_set(err, ENOSYS, "sandbox_umount: stub"); }
int sandbox_remove_file(sandbox *sb, const char *path, cx_err *err)
{ (void)sb; (void)path; return cx_err_set(err, ENOSYS, "sandbox_remove_file: stub"); }
