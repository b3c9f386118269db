// Package deploy holds no code: it is the home of the deployment files (the container
// image, docker-compose.yml at the repository root, the Kubernetes manifests under k8s/,
// the Prometheus and Grafana files) and of the tests that check them. The default tests
// decode every file strictly into the types of the tools that read it; the image test
// (build tag image, scripts/image-test.sh) builds the image with podman and runs the
// pipeline from it.
package deploy
