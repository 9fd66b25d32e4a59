// Fast run mode of the attention engine (paro.sim.fast): the clock, an AXI4 RAM on the engine's m_axi port,
// AXI4-Lite programming on axil and done detection, all in C++ around the Verilated model. Python writes a
// job file before the run and reads the result after it; nothing crosses into Python per cycle.
//
// Job file, one command a line (numbers in decimal):
//   memory <path> <bytes>          raw memory image, loaded at address 0
//   latency <cycles>               cycles from an AR to its burst's first beat (bursts served in turn)
//   limit <cycles>                 give up (status timeout) after this many cycles from START
//   write <word address> <value>   AXI4-Lite writes, in order (the last one is START)
//   read <name> <word address>     registers read after done, printed as "<name> <value>"
//   dump <address> <bytes> <path>  memory written to a file after done
// Output on stdout: "status ok" or "status timeout", "run_cycles N", "wall_seconds S", then the reads.
// The memory model accepts every AR, AW and W at once, returns one R beat a cycle once a burst's latency has
// passed, and answers each write burst on B in the cycle after its last W beat.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "Vparo.h"
#include "verilated.h"

#define AXIL(name) top->axil___05F##name
#define MAXI(name) top->m_axi___05F##name

template <typename T> static void put_bytes(T& sig, const uint8_t* p, int bytes) {
    if constexpr (std::is_integral_v<T>) {
        uint64_t v = 0;
        std::memcpy(&v, p, bytes);
        sig = static_cast<T>(v);
    } else {
        for (int w = 0; w < bytes / 4; w++) {
            uint32_t v;
            std::memcpy(&v, p + 4 * w, 4);
            sig[w] = v;
        }
    }
}

template <typename T> static void get_bytes(const T& sig, uint8_t* p, int bytes) {
    if constexpr (std::is_integral_v<T>) {
        uint64_t v = sig;
        std::memcpy(p, &v, bytes);
    } else {
        for (int w = 0; w < bytes / 4; w++) {
            uint32_t v = sig[w];
            std::memcpy(p + 4 * w, &v, 4);
        }
    }
}

struct Burst { uint64_t addr; unsigned beats; uint64_t cycle; };

struct Model {
    Vparo* top;
    std::vector<uint8_t> mem;
    unsigned beat_bytes;
    uint64_t latency = 0, cycle = 0;
    std::deque<Burst> reads, writes;
    std::deque<std::vector<uint8_t>> early_w;   // W beats that came before their AW
    std::vector<uint8_t> w_data;                // this edge's W beat
    unsigned r_beat = 0, w_beat = 0, b_pending = 0;
    uint64_t r_ready_at = 0;
    bool r_front_started = false;

    void drive() {   // the model's outputs for the coming edge
        MAXI(arready) = 1; MAXI(awready) = 1; MAXI(wready) = 1;
        MAXI(bvalid) = b_pending > 0; MAXI(bresp) = 0; MAXI(bid) = 0;
        MAXI(rvalid) = 0;
        if (!reads.empty()) {
            if (!r_front_started) {
                r_ready_at = std::max(cycle, reads.front().cycle) + latency;
                r_front_started = true;
            }
            if (cycle >= r_ready_at) {
                const Burst& b = reads.front();
                uint64_t a = b.addr + uint64_t(r_beat) * beat_bytes;
                if (a + beat_bytes > mem.size()) { std::fprintf(stderr, "read past memory at %llu\n", (unsigned long long)a); std::exit(3); }
                put_bytes(MAXI(rdata), &mem[a], beat_bytes);
                MAXI(rvalid) = 1; MAXI(rlast) = r_beat + 1 == b.beats; MAXI(rresp) = 0; MAXI(rid) = 0;
            }
        }
    }

    void store(const Burst& b, unsigned beat, const uint8_t* data) {
        uint64_t a = b.addr + uint64_t(beat) * beat_bytes;
        if (a + beat_bytes > mem.size()) { std::fprintf(stderr, "write past memory at %llu\n", (unsigned long long)a); std::exit(3); }
        std::memcpy(&mem[a], data, beat_bytes);
    }

    void edge() {   // after settle(): sample this edge's handshakes, clock, update the model
        bool ar = MAXI(arvalid) && MAXI(arready), r = MAXI(rvalid) && MAXI(rready);
        bool aw = MAXI(awvalid) && MAXI(awready), w = MAXI(wvalid) && MAXI(wready);
        bool b = MAXI(bvalid) && MAXI(bready);
        Burst ar_burst{MAXI(araddr), unsigned(MAXI(arlen)) + 1, cycle};
        Burst aw_burst{MAXI(awaddr), unsigned(MAXI(awlen)) + 1, cycle};
        if (w) get_bytes(MAXI(wdata), w_data.data(), beat_bytes);
        top->clk = 1; top->eval();
        if (ar) reads.push_back(ar_burst);
        if (r && ++r_beat == reads.front().beats) { reads.pop_front(); r_beat = 0; r_front_started = false; }
        if (aw) {
            writes.push_back(aw_burst);
            while (!early_w.empty() && !writes.empty()) { write_beat(early_w.front().data()); early_w.pop_front(); }
        }
        if (w) {
            if (writes.empty()) early_w.push_back(w_data); else write_beat(w_data.data());
        }
        if (b) b_pending--;
        cycle++;
    }

    void write_beat(const uint8_t* data) {
        store(writes.front(), w_beat, data);
        if (++w_beat == writes.front().beats) { writes.pop_front(); w_beat = 0; b_pending++; }
    }

    // Two evaluations a cycle: settle (new inputs, clock low), then the rising edge.
    void settle() { drive(); top->clk = 0; top->eval(); }
    void tick() { settle(); edge(); }
};

int main(int argc, char** argv) {
    if (argc != 2) { std::fprintf(stderr, "usage: %s JOB\n", argv[0]); return 2; }
    Verilated::commandArgs(1, argv);
    std::ifstream job(argv[1]);
    std::string line, memory_path;
    uint64_t memory_bytes = 0, limit = 0, latency = 0;
    std::vector<std::pair<uint32_t, uint32_t>> program;
    std::vector<std::pair<std::string, uint32_t>> reads;
    std::vector<std::tuple<uint64_t, uint64_t, std::string>> dumps;
    while (std::getline(job, line)) {
        std::istringstream in(line);
        std::string cmd;
        in >> cmd;
        if (cmd == "memory") in >> memory_path >> memory_bytes;
        else if (cmd == "latency") in >> latency;
        else if (cmd == "limit") in >> limit;
        else if (cmd == "write") { uint32_t a, v; in >> a >> v; program.emplace_back(a, v); }
        else if (cmd == "read") { std::string n; uint32_t a; in >> n >> a; reads.emplace_back(n, a); }
        else if (cmd == "dump") { uint64_t a, n; std::string p; in >> a >> n >> p; dumps.emplace_back(a, n, p); }
        else if (!cmd.empty()) { std::fprintf(stderr, "unknown job command %s\n", cmd.c_str()); return 2; }
    }

    Vparo* top = new Vparo;
    Model model{top};
    model.beat_bytes = MAXI_BEAT_BYTES;   // axi_data_bits / 8, defined by the build
    model.w_data.resize(MAXI_BEAT_BYTES);
    model.latency = latency;
    model.mem.assign(memory_bytes, 0);
    std::ifstream image(memory_path, std::ios::binary);
    image.read(reinterpret_cast<char*>(model.mem.data()), memory_bytes);
    if (!image) { std::fprintf(stderr, "cannot read %llu bytes from %s\n", (unsigned long long)memory_bytes, memory_path.c_str()); return 2; }

    // The model has no reset input (paro.hw.emit, reset=False): its registers start at their reset values.
    top->clk = 0;
    AXIL(awvalid) = 0; AXIL(wvalid) = 0; AXIL(arvalid) = 0; AXIL(bready) = 1; AXIL(rready) = 1;
    AXIL(wstrb) = 0xF; AXIL(awprot) = 0; AXIL(arprot) = 0;
    model.tick();

    for (auto [address, value] : program) {   // one AXI4-Lite write at a time: AW and W together, then B
        AXIL(awaddr) = address * 4; AXIL(wdata) = value; AXIL(awvalid) = 1; AXIL(wvalid) = 1;
        for (;;) { model.settle(); bool taken = AXIL(awready); model.edge(); if (taken) break; }
        AXIL(awvalid) = 0; AXIL(wvalid) = 0;
        for (;;) { model.settle(); bool answered = AXIL(bvalid); model.edge(); if (answered) break; }
    }

    auto start = std::chrono::steady_clock::now();
    uint64_t run_cycles = 0;
    bool done = false;
    while (run_cycles < limit) {
        model.tick();
        run_cycles++;
        if (top->done) { done = true; break; }
    }
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    std::printf("status %s\nrun_cycles %llu\nwall_seconds %.6f\n", done ? "ok" : "timeout",
                (unsigned long long)run_cycles, seconds);
    for (auto& [name, address] : reads) {
        AXIL(araddr) = address * 4; AXIL(arvalid) = 1;
        for (;;) { model.settle(); bool taken = AXIL(arready); model.edge(); if (taken) break; }
        AXIL(arvalid) = 0;
        uint32_t value = 0;
        for (;;) { model.settle(); bool valid = AXIL(rvalid); value = AXIL(rdata); model.edge(); if (valid) break; }
        std::printf("%s %u\n", name.c_str(), value);
    }
    for (auto& [address, bytes, path] : dumps) {
        std::ofstream out(path, std::ios::binary);
        out.write(reinterpret_cast<const char*>(&model.mem[address]), bytes);
    }
    top->final();
    delete top;
    return 0;
}
