// A minimal vcsim: Debian's golang-github-vmware-govmomi-dev ships the vCenter simulator
// as a library but no vcsim command, so the tests build this one (tests/simulators/vcsim.py).
//
//	vcsim -l 127.0.0.1:0 -username USER -password PASS [-no-capacity VM_NAME]...
//
// It prints one line "VCSIM_URL=https://USER:PASS@HOST:PORT/sdk" once it is listening and
// serves until SIGTERM or SIGINT. The inventory is simulator.VPX(): one datacenter DC0 with
// a standalone host DC0_H0 (VMs DC0_H0_VM0, DC0_H0_VM1) and a cluster DC0_C0 (resource
// pool Resources, VMs DC0_C0_RP0_VM0, DC0_C0_RP0_VM1), datastore LocalDS_0.
//
// The simulator never runs out of capacity, so -no-capacity NAME makes every clone of the
// VM or template NAME fail the way a full cluster does: the CloneVM_Task ends in an
// InsufficientResourcesFault, delivered over SOAP like any other task error.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

type names []string

func (n *names) String() string     { return strings.Join(*n, ",") }
func (n *names) Set(v string) error { *n = append(*n, v); return nil }

// noCapacityVM is a VM whose clones always fail for lack of resources.
// The VM is embedded by value: the simulator's property collector digs the managed object
// out of a wrapper's first field, and cannot follow a pointer there.
type noCapacityVM struct {
	simulator.VirtualMachine
}

func (vm *noCapacityVM) CloneVMTask(ctx *simulator.Context, req *types.CloneVM_Task) soap.HasFault {
	task := simulator.CreateTask(vm, "cloneVm", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		return nil, &types.InsufficientResourcesFault{}
	})
	return &methods.CloneVM_TaskBody{Res: &types.CloneVM_TaskResponse{Returnval: task.Run()}}
}

func main() {
	listen := flag.String("l", "127.0.0.1:0", "address to listen on (port 0: any free port)")
	username := flag.String("username", "", "the only user name accepted (empty: any)")
	password := flag.String("password", "", "that user's password")
	var noCapacity names
	flag.Var(&noCapacity, "no-capacity", "name of a VM whose clones fail with InsufficientResourcesFault (repeatable)")
	flag.Parse()

	model := simulator.VPX()
	if err := model.Create(); err != nil {
		log.Fatalf("vcsim: creating the inventory: %v", err)
	}
	defer model.Remove()

	for _, name := range noCapacity {
		var found *simulator.VirtualMachine
		for _, entity := range simulator.Map.All("VirtualMachine") {
			if vm, ok := entity.(*simulator.VirtualMachine); ok && vm.Name == name {
				found = vm
			}
		}
		if found == nil {
			log.Fatalf("vcsim: -no-capacity %s: no such VM", name)
		}
		simulator.Map.Put(&noCapacityVM{*found})
	}

	model.Service.TLS = new(tls.Config)
	address := &url.URL{Host: *listen}
	if *username != "" {
		address.User = url.UserPassword(*username, *password)
	}
	model.Service.Listen = address
	server := model.Service.NewServer()
	defer server.Close()

	fmt.Printf("VCSIM_URL=%s\n", server.URL)
	os.Stdout.Sync()

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
