/* spawn: posix_spawnp with the descriptors and signal state every child of ours starts with. */
#include "spawn.h"

#include <errno.h>
#include <signal.h>
#include <spawn.h>

#include "xalloc.h"

/* Descriptor fd of ours becomes the child's `target`; -1 leaves the child ours. */
static void
give(posix_spawn_file_actions_t *fa, int fd, int target)
{
	if (fd >= 0 && posix_spawn_file_actions_adddup2(fa, fd, target) == ENOMEM)
		die_nomem();
}

int
spawn_child(pid_t *pid, char *const argv[], const struct spawn_fds *fds, int flags)
{
	extern char **environ;
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, dfl;
	short how = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
	int rc;

	if (posix_spawn_file_actions_init(&fa) != 0 || posix_spawnattr_init(&attr) != 0)
		die_nomem();
	give(&fa, fds->in, 0);
	give(&fa, fds->out, 1);
	give(&fa, fds->err, 2);
	sigemptyset(&none);
	sigemptyset(&dfl);
	sigaddset(&dfl, SIGPIPE);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &dfl);
	if (flags & SPAWN_OWN_GROUP) {
		how |= POSIX_SPAWN_SETPGROUP;
		posix_spawnattr_setpgroup(&attr, 0);
	}
	posix_spawnattr_setflags(&attr, how);
	rc = posix_spawnp(pid, argv[0], &fa, &attr, argv, environ);
	posix_spawnattr_destroy(&attr);
	posix_spawn_file_actions_destroy(&fa);
	return rc;
}
