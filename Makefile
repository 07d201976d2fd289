# keel: `make run` boots the appliance in QEMU, `make test` runs every test.
# See README.md for every target and variable.

VERSION ?= 1.0.0
# The application in slot app-a of the image; APP= leaves the app slots empty.
APP ?= demo:1.0.0
PORT ?= 8443
APP_PORT ?= 8080
DISK ?= virtio
NIC ?= virtio
export KEEL_ADMIN_PASSWORD
export GOAMD64 = v1

GO_SRC := $(shell find agent initramfs image hwtest \( -name '*.go' -o -path '*/templates/*' -o -path '*/static/*' -o -path '*/profiles/*' \) -type f 2>/dev/null) go.mod go.sum
KERNEL := build/kernel/version
INITRAMFS := build/initramfs.cpio.lz4

.PHONY: deps initramfs image package run test test-unit soak bench fuzz clean

# Debian packages and the pinned kernel; cheap when everything is there.
deps:
	@bash image/deps.sh

$(KERNEL):
	@bash image/deps.sh

# The initramfs carries the vendor's public key: the box installs only
# packages signed with build/keys/vendor.key.
$(INITRAMFS): $(KERNEL) $(GO_SRC) build/keys/vendor.key
	go run ./initramfs -kernel build/kernel -files build/keys/vendor.pub:etc/keel/trusted.pub -o $@

initramfs: $(INITRAMFS)

# Always rebuilt: VERSION and KEEL_ADMIN_PASSWORD go into it, and it takes a second.
image: deps $(INITRAMFS)
	go run ./image build -version $(VERSION) -app "$(APP)" -kernel-dir build/kernel -initramfs $(INITRAMFS) -o build/keel.img -qcow2 build/keel.qcow2

build/keys/vendor.key:
	go run ./image keygen -o build/keys/vendor

# A signed base package of this tree: build/packages/keel-base-$(VERSION).kpkg.
package: deps $(INITRAMFS) build/keys/vendor.key
	go run ./image package -base-from-build -kernel-dir build/kernel -initramfs $(INITRAMFS) -version $(VERSION) \
		-key build/keys/vendor.key -o build/packages/keel-base-$(VERSION).kpkg

# The demo release in build/release: bases 1.0.0 and 1.1.0 of this tree, the demo app
# 1.0.0 to 2.0.1, a signed catalog; serve it with `go run ./image serve`.
.PHONY: release
release: deps $(INITRAMFS) build/keys/vendor.key
	go run ./image release -dir build/release -key build/keys/vendor.key -kernel-dir build/kernel -initramfs $(INITRAMFS)

run: image
	go run ./qemu/cmd/vm -image build/keel.img -port $(PORT) -app-port $(APP_PORT) -disk $(DISK) -nic $(NIC)

# Unit tests, root tests (skip with a message when not root) and VM tests
# booting build/keel.img and images the tests derive from it.
test: image
	KEEL_VM=1 KEEL_VM_LOGS=$(CURDIR)/build/vmtest-logs KEEL_SCREENSHOTS=$(CURDIR)/build/screenshots KEEL_IMAGE=$(CURDIR)/build/keel.img \
		KEEL_KERNEL=$(CURDIR)/build/kernel/vmlinuz KEEL_KERNEL_DIR=$(CURDIR)/build/kernel KEEL_INITRAMFS=$(CURDIR)/$(INITRAMFS) \
		KEEL_VENDOR_KEY=$(CURDIR)/build/keys/vendor.key \
		go test -count=1 -p 1 -parallel 3 -timeout 40m ./...

# KEEL_SOAK power cuts at random moments of an install (default 100);
# prints how many the box survived. FAILOVER_ROUNDS random partitions
# and heals of an automatic failover pair (default 100).
SOAK ?= 100
FAILOVER_ROUNDS ?= 100
soak: image
	rm -f $(CURDIR)/build/soak.txt; KEEL_VM=1 KEEL_SOAK=$(SOAK) KEEL_VM_LOGS=$(CURDIR)/build/vmtest-logs KEEL_IMAGE=$(CURDIR)/build/keel.img \
		KEEL_KERNEL_DIR=$(CURDIR)/build/kernel KEEL_INITRAMFS=$(CURDIR)/$(INITRAMFS) KEEL_VENDOR_KEY=$(CURDIR)/build/keys/vendor.key \
		KEEL_SOAK_REPORT=$(CURDIR)/build/soak.txt KEEL_FAILOVER_ROUNDS=$(FAILOVER_ROUNDS) \
		go test -count=1 -parallel 3 -timeout 6h -run 'TestPowerCutDuringInstall|TestFailoverRandomPartitions' ./qemu/vmtest/; \
		status=$$?; cat $(CURDIR)/build/soak.txt 2>/dev/null; exit $$status

# Every parser of outside input, FUZZTIME each (go's native fuzzing; seeds in
# the fuzz tests, new failing inputs land in testdata/fuzz of the package).
FUZZTIME ?= 30s
FUZZ_TARGETS := image/kpkg:FuzzOpen image/bundle:FuzzReader image/catalog:FuzzParse \
	image/downloadkey:FuzzParse image/appspec:FuzzParse agent/netcfg:FuzzConfig
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; echo "fuzz $$pkg $$fn for $(FUZZTIME)"; \
		go test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) ./$$pkg || exit 1; \
	done

test-unit:
	go test -count=1 ./...

bench: image
	KEEL_IMAGE=$(CURDIR)/build/keel.img KEEL_KERNEL_DIR=$(CURDIR)/build/kernel KEEL_INITRAMFS=$(CURDIR)/$(INITRAMFS) \
		go run ./qemu/cmd/bench
	go run ./qemu/cmd/netbench -runs 9

clean:
	rm -rf build/keel.img build/keel.qcow2 $(INITRAMFS)
