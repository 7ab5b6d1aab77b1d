"""The local Kubernetes test cluster behind ``hack/cluster``: a development tool, not the product.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and KWOK, built from their Go
modules at pinned versions, run as host processes on 127.0.0.1 next to a Prometheus 3 built the
same way. KWOK nodes are fake; each gets one /24 of the pod CIDR, whose addresses a test can bind
a real process to. Where the machine allows it (root, containerd, runc, the CNI plugins), a real
node runs beside them: the kubelet and kube-proxy of the same Kubernetes release with containerd,
images built here without a registry, and local PersistentVolumes.

Modules, one idea each:

- ``versions``: the pinned versions and the cache directory they select;
- ``addresses``: fixed ports, the Service range, pod CIDRs and the local route that makes pod
  addresses bindable;
- ``pki``: the cluster's certificates and the admin kubeconfig;
- ``build``: building (or reusing) the binaries with Go, Prometheus and promtool included;
- ``images``: the real node's images (debootstrap base, pause, the project's Dockerfile, the
  stand-in server), built with buildah and cached as OCI archives;
- ``node``: whether the real node can run here, its network, volumes and teardown;
- ``workload``: the stand-in InferenceDeployment the real-node tests and the demo run;
- ``process``: starting, finding and stopping component processes;
- ``components``: one module per component, each rendering its command line and configuration;
- ``client``: the few HTTP and kubectl calls the launcher makes;
- ``commands``: the command line (``hack/cluster build|up|down|status|env|versions``).

Configuration that is data lives in ``data/``: the KWOK stages, the Prometheus configuration
templates, containerd's configuration and the CNI network, the objects applied once the API
server answers, the pause program and the stand-in image's Containerfile.
"""
