//! Real clients and servers through plug, as operators run them: redis-server
//! behind plug, redis-benchmark and redis-cli in front (CONN-6: every request
//! answered, pipelined or not, by every runtime).

use plug_tests::*;
use std::process::Command;

#[test]
fn redis_benchmark_through_plug_gets_every_answer_conn_6() {
    let Some(server) = optional_program("redis-server", "redis-server") else {
        return;
    };
    let Some(bench) = optional_program("redis-benchmark", "redis-tools") else {
        return;
    };
    let Some(cli) = optional_program("redis-cli", "redis-tools") else {
        return;
    };
    let redis = RedisServer::start(&server);
    let dest = redis.addr.to_string();
    each_binary(|bin| {
        let plug = Plug::start(bin, &["{port}", &dest]);
        let port = plug.port.to_string();
        // 20 clients, then 20 clients pipelining 16 requests each.
        for pipeline in ["1", "16"] {
            let text = succeeded(
                Command::new(&bench)
                    .args(["-h", "127.0.0.1", "-p", &port, "-c", "20", "-n", "4000"])
                    .args(["-P", pipeline, "-t", "set,get", "-q", "--csv"]),
            );
            for test in ["\"SET\"", "\"GET\""] {
                assert!(text.contains(test), "no {test} result: {text}");
            }
        }
        // A value of 1 MB, written and read back whole.
        let big = "v".repeat(1 << 20);
        let set = output_with_input(
            Command::new(&cli).args(["-h", "127.0.0.1", "-p", &port, "-x", "set", "big"]),
            big.as_bytes(),
        );
        assert_eq!(String::from_utf8_lossy(&set.stdout).trim(), "OK");
        let get = Command::new(&cli)
            .args(["-h", "127.0.0.1", "-p", &port, "get", "big"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&get.stdout).trim_end(), big);
    });
}
