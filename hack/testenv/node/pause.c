/* The pod sandbox's process (the "pause" container): hold the pod's namespaces, reap
 * orphans, exit on SIGINT/SIGTERM. Built static by hack/testenv/node-build.sh. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void reap(int sig) {
	(void)sig;
	while (waitpid(-1, 0, WNOHANG) > 0) {
	}
}

static void quit(int sig) {
	(void)sig;
	_exit(0);
}

int main(void) {
	signal(SIGINT, quit);
	signal(SIGTERM, quit);
	signal(SIGCHLD, reap);
	for (;;)
		pause();
}
