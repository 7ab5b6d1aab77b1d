"""The local Kubernetes test cluster behind ``hack/cluster``: a development tool, not the product.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and KWOK, built from their Go
modules at pinned versions, run as host processes on 127.0.0.1 next to a Prometheus. Nodes are
fake (KWOK); each gets one /24 of the pod CIDR, whose addresses a test can bind a real process to.

Modules, one idea each:

- ``versions``: the pinned versions and the cache directory they select;
- ``addresses``: fixed ports, the Service range, pod CIDRs and the local route that makes pod
  addresses bindable;
- ``pki``: the cluster's certificates and the admin kubeconfig;
- ``build``: building (or reusing) the binaries with Go;
- ``process``: starting, finding and stopping component processes;
- ``components``: one module per component, each rendering its command line and configuration;
- ``client``: the few HTTP and kubectl calls the launcher makes;
- ``commands``: the command line (``hack/cluster build|up|down|status|env|versions``).

Configuration that is data lives in ``data/``: the KWOK stages, the Prometheus configuration
template and the objects applied once the API server answers.
"""
