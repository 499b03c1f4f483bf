"""A real local Kubernetes control plane (etcd and kube-apiserver) for development and tests.

Modelled on controller-runtime's envtest: real binaries built from pinned Go modules, started on free
loopback ports, torn down without leaving a process behind.
"""
