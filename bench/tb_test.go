package bench

import (
	"bytes"
	"context"
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestTBFatalStopsDoAndCleanupsRunLIFO(t *testing.T) {
	var out bytes.Buffer
	tb := NewTB(context.Background(), "x", &out)
	var order []int
	tb.Cleanup(func() { order = append(order, 1) })
	tb.Cleanup(func() { order = append(order, 2) })
	tb.Cleanup(func() { tb.Fatalf("cleanup fails") }) // must not stop the others
	reached := false
	err := tb.Do(func() {
		tb.Fatalf("field %s: must be > 0, got %d", "users", 0)
		reached = true
	})
	if err == nil || !strings.Contains(err.Error(), "field users: must be > 0, got 0") {
		t.Fatalf("Do: got %v, want the Fatalf message", err)
	}
	if reached {
		t.Fatal("code after Fatalf ran")
	}
	if !tb.Failed() {
		t.Fatal("Failed() = false after Fatalf")
	}
	if !strings.Contains(out.String(), "x: field users") {
		t.Fatalf("log output %q does not hold the message", out.String())
	}
	dir := tb.TempDir()
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("TempDir %s: %v", dir, err)
	}
	tb.Close()
	if !reflect.DeepEqual(order, []int{2, 1}) {
		t.Fatalf("cleanup order: got %v, want [2 1]", order)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("TempDir %s still exists after Close (err %v)", dir, err)
	}
	tb.Close() // idempotent
}

func TestTBOtherPanicsPropagate(t *testing.T) {
	tb := NewTB(context.Background(), "x", &bytes.Buffer{})
	defer func() {
		if r := recover(); r != "boom" {
			t.Fatalf("recovered %v, want boom", r)
		}
	}()
	_ = tb.Do(func() { panic("boom") })
}

// TestTBImplementsEveryMethod calls every exported method of testing.TB on
// a TB whose embedded interface is nil: a method that was not implemented
// would be promoted from the nil interface and panic with a nil dereference.
func TestTBImplementsEveryMethod(t *testing.T) {
	var out bytes.Buffer
	tb := NewTB(context.Background(), "all", &out)
	defer tb.Close()
	var iface testing.TB = tb
	typ := reflect.TypeOf((*testing.TB)(nil)).Elem()
	called := 0
	for i := 0; i < typ.NumMethod(); i++ {
		m := typ.Method(i)
		if !m.IsExported() {
			continue
		}
		v := reflect.ValueOf(iface).MethodByName(m.Name)
		args := make([]reflect.Value, v.Type().NumIn())
		for j := range args {
			in := v.Type().In(j)
			switch {
			case in.Kind() == reflect.String:
				args[j] = reflect.ValueOf("a")
			case in.Kind() == reflect.Func:
				args[j] = reflect.ValueOf(func() {})
			case in.Kind() == reflect.Slice:
				args[j] = reflect.MakeSlice(in, 0, 0)
			default:
				args[j] = reflect.Zero(in)
			}
		}
		if m.Name == "Chdir" {
			args[0] = reflect.ValueOf(t.TempDir())
		}
		var err error
		func() {
			defer func() {
				if r := recover(); r != nil {
					if _, ok := r.(*Fatal); !ok {
						t.Errorf("testing.TB method %s is not implemented by *TB: %v", m.Name, r)
					}
				}
			}()
			err = tb.Do(func() {
				if v.Type().IsVariadic() {
					v.CallSlice(args)
				} else {
					v.Call(args)
				}
			})
		}()
		_ = err
		called++
	}
	if called < 20 {
		t.Fatalf("called %d methods, want every exported method of testing.TB (>= 20)", called)
	}
}
