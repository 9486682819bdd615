/* spawn: start a child program with posix_spawnp, the one way the programs start one. */
#ifndef OA_SPAWN_H
#define OA_SPAWN_H

#include <sys/types.h>

/* The descriptors the child gets as its stdin, stdout and stderr; -1: it shares ours. */
struct spawn_fds {
	int in, out, err;
};

enum {
	SPAWN_OWN_GROUP = 1	/* its own process group: a terminal's ^C reaches us, not it */
};

/*
 * Start argv[0], looked up in PATH, with argv and our environment. The child
 * starts with no signal blocked and SIGPIPE at its default (our programs
 * ignore SIGPIPE to see write errors; a child should not inherit that);
 * handlers we installed are reset by exec itself. Returns 0 with *pid set,
 * or an errno value: ENOENT, EACCES... when argv[0] cannot be run (glibc
 * reports a failed exec here, not through the child's exit status).
 */
int spawn_child(pid_t *pid, char *const argv[], const struct spawn_fds *fds, int flags);

#endif
