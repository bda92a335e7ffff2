// Package e2e tests the local Docker cluster of networks/local end to end:
// its test builds the image with build.sh, starts the repository's
// docker-compose.yml under a project name, ports and subnet of its own,
// perturbs it with the scripts of networks/local/scripts (the commands a
// user types), and checks over the published HTTP APIs and the webhook
// receiver what the network must keep (docs/TESTING.md). The package holds
// nothing but that test.
package e2e
