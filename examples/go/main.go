// Command metalearn-go trains an attempt on a metalearn gateway from Go, with code
// generated from the .proto files alone (buf generate, buf.gen.yaml): it creates the
// attempt, queues its training, follows WatchAttempt, gets the result and lists it.
//
//	metalearn-go [-gateway 127.0.0.1:50051] [-command ../digits_lenet.json] [-train=false] NAME
//
// Every call carries `authorization: Bearer <token>`: METALEARN_TOKEN, else the admin
// token a local gateway wrote to .metalearn/admin.token (or $METALEARN_DATA_DIR). A
// refused request prints its code and every field violation (google.rpc.BadRequest).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	metalearnv1 "metalearn.dev/examples/go/gen/metalearn/v1"
)

func token() (string, error) {
	if t := os.Getenv("METALEARN_TOKEN"); t != "" {
		return strings.TrimSpace(t), nil
	}
	dir := os.Getenv("METALEARN_DATA_DIR")
	if dir == "" {
		dir = ".metalearn"
	}
	data, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	return strings.TrimSpace(string(data)), err
}

// The command file is the prototype's JSON (snake_case names, layers as objects):
// protojson reads proto field names as well as JSON names, and Structs as plain JSON.
func readCommand(path string) (*metalearnv1.TrainCommand, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	command := &metalearnv1.TrainCommand{}
	return command, protojson.Unmarshal(data, command)
}

// report prints a failed call: its code and message, then each field violation.
func report(err error) {
	st := status.Convert(err)
	fmt.Fprintf(os.Stderr, "go example: %s: %s\n", strings.ToUpper(codeName(st.Code())), st.Message())
	for _, detail := range st.Details() {
		if bad, ok := detail.(*errdetails.BadRequest); ok {
			for _, v := range bad.GetFieldViolations() {
				fmt.Fprintf(os.Stderr, "  %s: %s\n", v.GetField(), v.GetDescription())
			}
		}
	}
}

// codeName spells a code as gRPC's documentation does (INVALID_ARGUMENT).
func codeName(code codes.Code) string {
	var b strings.Builder
	for i, r := range code.String() {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func watch(ctx context.Context, client metalearnv1.AttemptServiceClient, name string) error {
	stream, err := client.WatchAttempt(ctx, &metalearnv1.WatchAttemptRequest{
		Key: &metalearnv1.WatchAttemptRequest_Name{Name: name},
	})
	if err != nil {
		return err
	}
	for {
		event, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		if e := event.GetEpoch(); e != nil {
			fmt.Printf("epoch %d  loss %.4f  val accuracy %.3f\n", e.GetEpoch(), e.GetLoss(), e.GetValAccuracy())
		}
		if s := event.GetStatus(); s != nil {
			switch s.GetStatus() {
			case metalearnv1.AttemptStatus_ATTEMPT_STATUS_TRAINED, metalearnv1.AttemptStatus_ATTEMPT_STATUS_COMPLETE,
				metalearnv1.AttemptStatus_ATTEMPT_STATUS_FAILED, metalearnv1.AttemptStatus_ATTEMPT_STATUS_CANCELLED:
				return nil
			}
		}
	}
}

func run(gateway, commandFile, name string, train bool) error {
	secret, err := token()
	if err != nil {
		return fmt.Errorf("no token (set METALEARN_TOKEN): %w", err)
	}
	command, err := readCommand(commandFile)
	if err != nil {
		return fmt.Errorf("%s: %w", commandFile, err)
	}
	// Plaintext for a gateway on this machine; with TLS, grpc.WithTransportCredentials.
	conn, err := grpc.Dial(gateway, grpc.WithInsecure())
	if err != nil {
		return err
	}
	defer conn.Close()
	client := metalearnv1.NewAttemptServiceClient(conn)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+secret)
	call, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()

	attempt := &metalearnv1.Attempt{Name: name, TrainingCommands: command}
	_, err = client.CreateAttempt(call, &metalearnv1.CreateAttemptRequest{Attempt: attempt})
	switch status.Code(err) {
	case codes.OK:
		fmt.Printf("created %s\n", name)
	case codes.AlreadyExists:
		fmt.Printf("%s exists\n", name)
	default:
		return err
	}
	if train {
		queued, err := client.Train(call, &metalearnv1.TrainRequest{Name: name, Command: command})
		if err != nil {
			return err
		}
		fmt.Printf("%s (id %d) %s\n", name, queued.GetAttempt().GetId(), queued.GetAttempt().GetStatus())
		if err := watch(ctx, client, name); err != nil {
			return err
		}
	}
	got, err := client.GetAttempt(call, &metalearnv1.GetAttemptRequest{
		Key: &metalearnv1.GetAttemptRequest_Name{Name: name},
	})
	if err != nil {
		return err
	}
	a := got.GetAttempt()
	fmt.Printf("%s %s: %d epochs", name, a.GetStatus(), len(a.GetTrainingLosses()))
	if losses := a.GetTrainingLosses(); len(losses) > 0 {
		fmt.Printf(", last loss %.4f", losses[len(losses)-1])
	}
	fmt.Println()
	listed, err := client.ListAttempts(call, &metalearnv1.ListAttemptsRequest{NamePrefix: name})
	if err != nil {
		return err
	}
	for _, each := range listed.GetAttempts() {
		fmt.Printf("listed %d %s %s\n", each.GetId(), each.GetName(), each.GetStatus())
	}
	if train && a.GetStatus() != metalearnv1.AttemptStatus_ATTEMPT_STATUS_TRAINED {
		return fmt.Errorf("%s ended %s: %s", name, a.GetStatus(), a.GetError())
	}
	return nil
}

func main() {
	gateway := flag.String("gateway", os.Getenv("METALEARN_GATEWAY"), "the gateway's HOST:PORT (env METALEARN_GATEWAY)")
	commandFile := flag.String("command", "../digits_lenet.json", "a TrainCommand as JSON")
	train := flag.Bool("train", true, "queue training and follow it (false: create, get and list only)")
	flag.Parse()
	if *gateway == "" {
		*gateway = "127.0.0.1:50051"
	}
	name := flag.Arg(0)
	if name == "" {
		name = "go-lenet"
	}
	if err := run(*gateway, *commandFile, name, *train); err != nil {
		if _, ok := status.FromError(err); ok {
			report(err)
		} else {
			fmt.Fprintf(os.Stderr, "go example: %v\n", err)
		}
		os.Exit(1)
	}
}
