// Package vmtest holds the tests that boot real keel images under QEMU and
// the helpers they share. They run when KEEL_VM=1 and KEEL_IMAGE point at a
// built image (`make test` sets both); otherwise they skip with a message.
package vmtest
