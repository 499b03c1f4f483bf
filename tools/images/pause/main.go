// Command pause holds a pod's namespaces open until it is told to stop, like Kubernetes' own pause
// image. The local cluster cannot pull registry.k8s.io/pause, so it builds this one from source.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	// As PID 1 of a sandbox it inherits orphans; ignoring SIGCHLD lets the kernel reap them.
	signal.Ignore(syscall.SIGCHLD)
	<-stop
}
