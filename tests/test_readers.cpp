// Tests for the source-checkpoint readers (safetensors, PyTorch zip and
// legacy) and the restricted unpickler. Fixtures come from
// scripts/make_reader_fixtures.py.

#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "weights/checkpoint.h"
#include "weights/dtype.h"
#include "weights/pickle.h"

namespace fs = std::filesystem;
using namespace std::string_literals;

namespace {

std::string fixture(const std::string& name) { return std::string(XLMR_FIXTURES_DIR) + "/readers/" + name; }

std::vector<uint8_t> slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void spit(const std::string& path, const uint8_t* data, size_t n) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(n));
  REQUIRE(out.good());
}

void spit(const std::string& path, const std::string& s) {
  spit(path, reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

// A scratch directory removed at the end of each test case.
struct TempDir {
  fs::path dir;
  TempDir() {
    static int counter = 0;
    dir = fs::temp_directory_path() /
          ("xlmr_readers_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(dir);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string file(const std::string& name) const { return (dir / name).string(); }
};

// Reads the tensor's bytes from its file (the readers load nothing when
// they open a checkpoint) and decodes them.
std::vector<double> values_of(const xlmr::SourceTensor& t) {
  const size_t n = static_cast<size_t>(t.numel());
  const std::vector<uint8_t> bytes = t.read();
  REQUIRE(bytes.size() == n * xlmr::dtype_size(t.dtype));
  std::vector<double> out(n);
  const uint8_t* p = bytes.data();
  for (size_t i = 0; i < n; ++i) {
    switch (t.dtype) {
      case xlmr::SrcDType::f32: { float v; std::memcpy(&v, p + 4 * i, 4); out[i] = v; break; }
      case xlmr::SrcDType::f64: { double v; std::memcpy(&v, p + 8 * i, 8); out[i] = v; break; }
      case xlmr::SrcDType::f16: { uint16_t v; std::memcpy(&v, p + 2 * i, 2); out[i] = xlmr::f16_to_f32(v); break; }
      case xlmr::SrcDType::bf16: { uint16_t v; std::memcpy(&v, p + 2 * i, 2); out[i] = xlmr::bf16_to_f32(v); break; }
      case xlmr::SrcDType::i64: { int64_t v; std::memcpy(&v, p + 8 * i, 8); out[i] = double(v); break; }
      case xlmr::SrcDType::i32: { int32_t v; std::memcpy(&v, p + 4 * i, 4); out[i] = v; break; }
      case xlmr::SrcDType::i16: { int16_t v; std::memcpy(&v, p + 2 * i, 2); out[i] = v; break; }
      case xlmr::SrcDType::i8: { int8_t v; std::memcpy(&v, p + i, 1); out[i] = v; break; }
      case xlmr::SrcDType::u8: out[i] = p[i]; break;
      case xlmr::SrcDType::boolean: out[i] = p[i] ? 1.0 : 0.0; break;
    }
  }
  return out;
}

// Opens a checkpoint and reads every tensor's bytes, which opening alone
// does not.
void read_all(const std::string& path) {
  const xlmr::Checkpoint ck = xlmr::read_checkpoint_file(path);
  std::vector<uint8_t> bytes;
  for (const xlmr::SourceTensor& t : ck.tensors) {
    t.read(&bytes);
    REQUIRE(bytes.size() == t.nbytes());
  }
}

// 0: read fine, 1: xlmr::Error, 2: any other exception.
int outcome(const std::function<void()>& fn) {
  try {
    fn();
    return 0;
  } catch (const xlmr::Error&) {
    return 1;
  } catch (...) {
    return 2;
  }
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const xlmr::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("NOT AN xlmr::Error: ") + e.what();
  }
  return "NO ERROR";
}

// ---- building legacy-format files by hand --------------------------------

std::string u32le(uint32_t v) {
  std::string s(4, '\0');
  for (int k = 0; k < 4; ++k) s[k] = char((v >> (8 * k)) & 0xff);
  return s;
}

std::string u64le(uint64_t v) {
  std::string s(8, '\0');
  for (int k = 0; k < 8; ++k) s[k] = char((v >> (8 * k)) & 0xff);
  return s;
}

std::string ustr(const std::string& s) { return "X" + u32le(uint32_t(s.size())) + s; }

const std::string kLegacyHead =
    std::string("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.", 15) +  // magic
    std::string("\x80\x02M\xe9\x03.", 6) +                                          // 1001
    std::string("\x80\x02}.", 4);                                                   // sys info

// A legacy file: `obj` is the body of the object pickle (without PROTO/STOP);
// storages are (key, element count, bytes).
struct LegacyStorage {
  std::string key;
  uint64_t count;
  std::string bytes;
};

std::string legacy_file(const std::string& obj, const std::vector<LegacyStorage>& storages) {
  std::string s = kLegacyHead + "\x80\x02" + obj + ".";
  s += "\x80\x02(";
  for (const auto& st : storages) s += ustr(st.key);
  s += "l.";
  for (const auto& st : storages) s += u64le(st.count) + st.bytes;
  return s;
}

// ('storage', torch.FloatStorage, key, 'cpu', numel, None) -> BINPERSID
std::string float_storage_pid(const std::string& key, int numel) {
  return "(" + ustr("storage") + "ctorch\nFloatStorage\n" + ustr(key) + ustr("cpu") + "J" + u32le(uint32_t(numel)) +
         "NtQ";
}

// _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())
std::string tensor_pickle(const std::string& pid, int offset, const std::vector<int>& size,
                          const std::vector<int>& stride) {
  std::string s = "ctorch._utils\n_rebuild_tensor_v2\n(" + pid + "J" + u32le(uint32_t(offset)) + "(";
  for (int d : size) s += "J" + u32le(uint32_t(d));
  s += "t(";
  for (int d : stride) s += "J" + u32le(uint32_t(d));
  s += "t\x89" "ccollections\nOrderedDict\n)RtR";
  return s;
}

std::string floats(const std::vector<float>& v) {
  std::string s(v.size() * 4, '\0');
  std::memcpy(&s[0], v.data(), s.size());
  return s;
}

xlmr::pickle::Value* unpickle(xlmr::pickle::Unpickler& up) {
  size_t off = 0;
  return up.load(&off);
}

// ---- rewriting zip archives --------------------------------------------------

uint32_t get_le(const std::string& s, size_t at, int bytes) {
  REQUIRE(at + size_t(bytes) <= s.size());
  uint32_t v = 0;
  for (int k = bytes - 1; k >= 0; --k) v = (v << 8) | uint8_t(s[at + size_t(k)]);
  return v;
}

std::string le(uint32_t v, int bytes) {
  std::string s(size_t(bytes), '\0');
  for (int k = 0; k < bytes; ++k) s[size_t(k)] = char((v >> (8 * k)) & 0xff);
  return s;
}

uint32_t crc32_of(const std::string& s) {
  uint32_t c = 0xffffffffu;
  for (unsigned char b : s) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
  }
  return ~c;
}

struct ZipMember {
  std::string name;
  std::string data;  // uncompressed
};

// The members of a small (non-zip64) archive whose data is stored, as
// torch.save writes it, found through the central directory.
std::vector<ZipMember> zip_members(const std::string& zip) {
  size_t eocd = zip.rfind(std::string("PK\x05\x06", 4));
  REQUIRE(eocd != std::string::npos);
  const uint32_t count = get_le(zip, eocd + 10, 2);
  size_t at = get_le(zip, eocd + 16, 4);
  std::vector<ZipMember> out;
  for (uint32_t i = 0; i < count; ++i) {
    REQUIRE(get_le(zip, at, 4) == 0x02014b50u);
    REQUIRE(get_le(zip, at + 10, 2) == 0);  // stored
    const uint32_t size = get_le(zip, at + 20, 4);
    const uint32_t nlen = get_le(zip, at + 28, 2), elen = get_le(zip, at + 30, 2), clen = get_le(zip, at + 32, 2);
    const uint32_t local = get_le(zip, at + 42, 4);
    ZipMember m;
    m.name = zip.substr(at + 46, nlen);
    const size_t data = local + 30 + get_le(zip, local + 26, 2) + get_le(zip, local + 28, 2);
    m.data = zip.substr(data, size);
    out.push_back(m);
    at += 46 + nlen + elen + clen;
  }
  return out;
}

// A deflate stream of stored blocks: valid for any decoder, no zlib needed
// here. `cut` drops that many bytes from the end of the stream, so that it
// ends before the data it promises.
std::string deflate_stored(const std::string& data, size_t cut = 0) {
  std::string out;
  size_t at = 0;
  do {
    const size_t n = std::min<size_t>(data.size() - at, 65535);
    const bool last = at + n == data.size();
    out += char(last ? 1 : 0);
    out += le(uint32_t(n), 2) + le(uint32_t(~n & 0xffff), 2) + data.substr(at, n);
    at += n;
  } while (at < data.size());
  return out.substr(0, out.size() - cut);
}

// Writes the members as a zip archive; those `compress` picks are deflated
// (with deflate_stored, cut short by `cut` bytes).
std::string zip_archive(const std::vector<ZipMember>& members,
                        const std::function<bool(const std::string&)>& compress, size_t cut = 0) {
  std::string out, dir;
  for (const ZipMember& m : members) {
    const bool deflate = compress(m.name);
    const std::string body = deflate ? deflate_stored(m.data, cut) : m.data;
    // version, flags, method, time, date, CRC, sizes, name length, extra length
    const std::string fields = le(20, 2) + le(0, 2) + le(deflate ? 8 : 0, 2) + le(0, 2) + le(0x21, 2) +
                               le(crc32_of(m.data), 4) + le(uint32_t(body.size()), 4) +
                               le(uint32_t(m.data.size()), 4) + le(uint32_t(m.name.size()), 2) + le(0, 2);
    dir += le(0x02014b50u, 4) + le(20, 2) + fields + le(0, 2) + le(0, 2) + le(0, 2) + le(0, 4) +
           le(uint32_t(out.size()), 4) + m.name;
    out += le(0x04034b50u, 4) + fields + m.name + body;
  }
  const uint32_t n = uint32_t(members.size());
  return out + dir + le(0x06054b50u, 4) + le(0, 2) + le(0, 2) + le(n, 2) + le(n, 2) + le(uint32_t(dir.size()), 4) +
         le(uint32_t(out.size()), 4) + le(0, 2);
}

bool is_storage(const std::string& member) { return member.find("/data/") != std::string::npos; }

}  // namespace

TEST_CASE("valid fixtures read back exactly", "[readers]") {
  std::ifstream in(fixture("expected.json"));
  REQUIRE(in.good());
  nlohmann::json expected = nlohmann::json::parse(in);
  REQUIRE(expected.size() >= 7);
  for (auto it = expected.begin(); it != expected.end(); ++it) {
    const std::string path = fixture(it.key());
    INFO("fixture " << it.key());
    const nlohmann::json& want = it.value();
    xlmr::Checkpoint ck = xlmr::read_checkpoint_file(path);
    CHECK(ck.format == want["format"].get<std::string>());
    REQUIRE(ck.tensors.size() == want["tensors"].size());
    for (size_t i = 0; i < ck.tensors.size(); ++i) {
      const xlmr::SourceTensor& t = ck.tensors[i];
      const nlohmann::json& w = want["tensors"][i];
      INFO("tensor " << w["name"].get<std::string>());
      CHECK(t.name == w["name"].get<std::string>());
      CHECK(std::string(xlmr::dtype_name(t.dtype)) == w["dtype"].get<std::string>());
      CHECK(t.shape == w["shape"].get<std::vector<int64_t>>());
      CHECK(values_of(t) == w["values"].get<std::vector<double>>());
    }
  }
}

TEST_CASE("sniffing looks at content, not names", "[readers]") {
  using xlmr::SourceKind;
  CHECK(xlmr::sniff_checkpoint(fixture("state_zip.pt")) == SourceKind::torch_zip);
  CHECK(xlmr::sniff_checkpoint(fixture("nested_legacy.pt")) == SourceKind::torch_legacy);
  CHECK(xlmr::sniff_checkpoint(fixture("model.safetensors")) == SourceKind::safetensors);
  CHECK(xlmr::sniff_checkpoint(fixture("handmade.safetensors")) == SourceKind::safetensors);
  CHECK(xlmr::sniff_checkpoint(fixture("expected.json")) == SourceKind::unknown);
  CHECK(xlmr::sniff_checkpoint(fixture("st_header_too_big.safetensors")) == SourceKind::unknown);

  TempDir tmp;
  spit(tmp.file("empty"), "");
  CHECK(xlmr::sniff_checkpoint(tmp.file("empty")) == SourceKind::unknown);
  CHECK_THAT(error_of([&] { xlmr::read_checkpoint_file(tmp.file("empty")); }),
             Catch::Contains("not a recognised checkpoint (expected safetensors, or a PyTorch .pt/.bin)"));
  CHECK_THAT(error_of([&] { xlmr::sniff_checkpoint(tmp.file("missing.pt")); }), Catch::Contains("missing.pt"));
  CHECK_THAT(error_of([&] { xlmr::read_checkpoint_file(tmp.file("missing.pt")); }), Catch::Contains("missing.pt"));
  CHECK_THAT(error_of([&] { xlmr::read_checkpoint_file(tmp.dir.string()); }), Catch::Contains("directory"));
  CHECK_THAT(error_of([&] { xlmr::read_torch_checkpoint(fixture("model.safetensors")); }),
             Catch::Contains("not a PyTorch checkpoint"));
  CHECK(outcome([&] { xlmr::read_safetensors(fixture("state_zip.pt")); }) == 1);
}

TEST_CASE("nested checkpoints: metadata and Namespace fields", "[readers]") {
  for (const char* name : {"nested_zip.pt", "nested_legacy.pt"}) {
    INFO(name);
    xlmr::Checkpoint ck = xlmr::read_checkpoint_file(fixture(name));
    const nlohmann::json& m = ck.metadata;
    REQUIRE(m.contains("args"));
    CHECK(m["args"]["arch"] == "roberta_base");
    CHECK(m["args"]["lr"] == nlohmann::json::array({0.0001}));
    CHECK(m["args"]["layers"] == 2);
    CHECK(m["args"]["fp16"] == true);
    CHECK(m["args"]["nothing"].is_null());
    CHECK(m["args"]["dropout"] == 0.1);
    CHECK(m["extra_state"]["epoch"] == 3);
    CHECK(m["extra_state"]["7"] == "seven");
    CHECK(m["optimizer_history"] == nlohmann::json::array());
    CHECK_FALSE(m.contains("model"));  // tensors only: no metadata leaves there
  }
  xlmr::Checkpoint st = xlmr::read_checkpoint_file(fixture("model.safetensors"));
  CHECK(st.metadata["__metadata__"]["format"] == "pt");
  xlmr::Checkpoint hm = xlmr::read_safetensors(fixture("handmade.safetensors"));
  CHECK(hm.metadata["__metadata__"]["note"] == "unaligned");
}

TEST_CASE("hostile and corrupt fixtures are rejected with clear errors", "[readers]") {
  struct Case {
    const char* file;
    const char* mention;
  };
  const Case cases[] = {
      {"evil_os_system.pt", "refusing to unpickle global 'os.system'"},
      {"evil_eval.pt", "refusing to unpickle global 'builtins.eval'"},
      {"evil_numpy.pt", "numpy.core.multiarray._reconstruct"},
      {"bad_opcode.pt", "unsupported pickle opcode 0xfe at offset 5"},
      {"bad_memo.pt", "unknown memo entry 5"},
      {"bad_nomark.pt", "MARK missing"},
      {"bad_oob_stride.pt", "tensor 'w' reaches element 8 of a storage with 4 elements"},
      {"bad_short_storage.pt", "archive/data/0"},
      {"bad_missing_storage.pt", "archive/data/9' is missing"},
      {"bad_bigendian.pt", "little-endian"},
      {"bad_single_tensor.pt", "checkpoint holds a single tensor, not a state dict"},
      {"bad_no_datapkl.pt", "data.pkl"},
      {"truncated_zip.pt", "truncated_zip.pt"},
      {"truncated_legacy.pt", "truncated"},
      {"truncated.safetensors", "past the data buffer"},
      {"st_overlap.safetensors", "'b' overlaps"},
      {"st_gap.safetensors", "gap before tensor 'b'"},
      {"st_bad_dtype.safetensors", "tensor 'a' has unsupported dtype 'F8_E4M3'"},
      {"st_bad_size.safetensors", "'a' data_offsets span 8 bytes but shape and dtype need 12"},
      {"st_duplicate.safetensors", "duplicate name 'a'"},
      {"st_negative.safetensors", "negative"},
      {"st_not_json.safetensors", "not valid JSON"},
  };
  for (const Case& c : cases) {
    INFO(c.file);
    const std::string path = fixture(c.file);
    std::string msg = error_of([&] { xlmr::read_checkpoint_file(path); });
    CHECK_THAT(msg, Catch::Contains(c.mention));
    CHECK_THAT(msg, Catch::Contains(c.file));
    CHECK(msg.find('\n') == std::string::npos);
  }
  CHECK_THAT(error_of([&] { xlmr::read_safetensors(fixture("st_header_too_big.safetensors")); }),
             Catch::Contains("exceeds the file size"));
}

TEST_CASE("every truncation of a valid file is rejected", "[readers]") {
  TempDir tmp;
  for (const char* name : {"model.safetensors", "handmade.safetensors", "handmade_zip.pt", "nested_zip.pt",
                           "nested_legacy.pt"}) {
    INFO(name);
    const std::vector<uint8_t> full = slurp(fixture(name));
    const std::string path = tmp.file(std::string("cut_") + name);
    int bad = 0;
    // Opening reads no tensor bytes, yet rejects every cut: the structure it
    // checks (header and data extent, zip directory, legacy element counts)
    // accounts for every byte the tensors need.
    for (size_t n = 0; n < full.size(); ++n) {
      spit(path, full.data(), n);
      if (outcome([&] { xlmr::read_checkpoint_file(path); }) != 1) {
        ++bad;
        UNSCOPED_INFO("length " << n << " was not rejected with xlmr::Error");
      }
    }
    CHECK(bad == 0);
    spit(path, full.data(), full.size());
    CHECK(outcome([&] { read_all(path); }) == 0);
  }
}

TEST_CASE("random garbage and mutations never crash", "[readers]") {
  TempDir tmp;
  std::mt19937_64 rng(20240611);
  const std::string path = tmp.file("garbage");
  const std::vector<std::string> prefixes = {
      "",
      std::string("PK\x03\x04", 4),
      std::string("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 14),
      kLegacyHead,
      u64le(40) + "{",
  };
  int other = 0;
  for (int iter = 0; iter < 600; ++iter) {
    std::string s = prefixes[size_t(iter) % prefixes.size()];
    const size_t n = size_t(rng() % 2048);
    for (size_t k = 0; k < n; ++k) s += char(rng() & 0xff);
    spit(path, s);
    if (outcome([&] { read_all(path); }) == 2) ++other;
  }
  CHECK(other == 0);

  for (const char* name : {"nested_legacy.pt", "model.safetensors", "handmade_zip.pt", "state_proto4.pt"}) {
    INFO(name);
    const std::vector<uint8_t> full = slurp(fixture(name));
    int bad = 0;
    for (int iter = 0; iter < 800; ++iter) {
      std::vector<uint8_t> m = full;
      const int flips = 1 + int(rng() % 4);
      for (int f = 0; f < flips; ++f) {
        const size_t pos = size_t(rng() % m.size());
        if (rng() % 2) {
          m[pos] = uint8_t(rng() & 0xff);
        } else {
          m[pos] ^= uint8_t(1u << (rng() % 8));
        }
      }
      spit(path, m.data(), m.size());
      if (outcome([&] { read_all(path); }) == 2) ++bad;
    }
    CHECK(bad == 0);
  }
}

TEST_CASE("unpickler handles malformed pickles with clear errors", "[readers]") {
  using xlmr::pickle::Unpickler;
  auto run = [](const std::string& bytes) {
    return error_of([&] {
      Unpickler up(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "test.pkl");
      unpickle(up);
    });
  };
  CHECK_THAT(run(""), Catch::Contains("truncated"));
  CHECK_THAT(run("\x80\x02"), Catch::Contains("truncated"));
  CHECK_THAT(run("\x80\x02."), Catch::Contains("stack underflow"));
  CHECK_THAT(run("\x80\x02R."), Catch::Contains("stack underflow"));
  CHECK_THAT(run("\x80\x02t."), Catch::Contains("MARK missing"));
  CHECK_THAT(run("\x80\x02(."), Catch::Contains("stack underflow"));
  CHECK_THAT(run("\x80\x02N(s."), Catch::Contains("stack underflow"));
  CHECK_THAT(run(std::string("\x80\x02X\xff\xff\xff\x7f", 7)), Catch::Contains("truncated"));
  CHECK_THAT(run(std::string("\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\xff", 11)), Catch::Contains("truncated"));
  CHECK_THAT(run(std::string("\x80\x02\x8b\x00\x00\x00\x10", 7)), Catch::Contains("too large"));
  CHECK_THAT(run(std::string("\x80\x02X\x02\x00\x00\x00\xc3\x28.", 11)), Catch::Contains("UTF-8"));
  CHECK_THAT(run("\x80\x02Ifoo\n."), Catch::Contains("malformed INT"));
  CHECK_THAT(run("\x80\x09N."), Catch::Contains("protocol 9"));
  CHECK_THAT(run("\x80\x02NK\x01\x86K\x03K\x02s."), Catch::Contains("SETITEM on a tuple"));
  CHECK_THAT(run("\x80\x02}]K\x01s."), Catch::Contains("unhashable"));
  CHECK_THAT(run("\x80\x02}K\x01" "a."), Catch::Contains("APPEND to a dict"));
  CHECK_THAT(run("\x80\x02K\x01)R."), Catch::Contains("REDUCE on a int"));
  CHECK_THAT(run("\x80\x02j\x00\x00\x01\x00."s), Catch::Contains("unknown memo entry 65536"));
  CHECK_THAT(run("\x80\x02" "ctorch\nFloatStorage\n)R."), Catch::Contains("torch.FloatStorage"));
  CHECK_THAT(run("\x80\x02" "cposix\nsystem\n."), Catch::Contains("refusing to unpickle global 'posix.system'"));
  CHECK_THAT(run("\x80\x02" "c__builtin__\neval\n."), Catch::Contains("'__builtin__.eval'"));
  CHECK_THAT(run("\x80\x02" "ctorch\nload\n."), Catch::Contains("'torch.load'"));
  CHECK_THAT(run("\x80\x02(K\x01K\x02tQ."), Catch::Contains("persistent id"));
  CHECK_THAT(run("\x80\x02i"), Catch::Contains("unsupported pickle opcode 0x69 at offset 2"));

  // Limits: a pickle cannot grow the stack or object count without bound.
  xlmr::pickle::Limits small;
  small.max_stack = 100;
  small.max_objects = 1000;
  std::string deep = "\x80\x02" + std::string(200, 'N') + ".";
  CHECK_THAT(error_of([&] {
               Unpickler up(reinterpret_cast<const uint8_t*>(deep.data()), deep.size(), "deep.pkl", small);
               unpickle(up);
             }),
             Catch::Contains("stack deeper than 100"));
  std::string many = "\x80\x02]";
  for (int i = 0; i < 2000; ++i) many += "K\x01" "a";
  many += ".";
  CHECK_THAT(error_of([&] {
               Unpickler up(reinterpret_cast<const uint8_t*>(many.data()), many.size(), "many.pkl", small);
               unpickle(up);
             }),
             Catch::Contains("more than 1000 objects"));
}

TEST_CASE("unpickler builds the value model", "[readers]") {
  using namespace xlmr::pickle;
  // {'a': [1, -2, 3.5, 'x', None, True], 2: (b'zz',), 'big': 2**70}, protocol 2 with memo reuse
  std::string s = "\x80\x02}q\x00("s + ustr("a") + "]q\x01(K\x01J" + u32le(uint32_t(-2)) +
                  std::string("G\x40\x0c\x00\x00\x00\x00\x00\x00", 9) + ustr("x") + "N\x88" + "eK\x02" +
                  std::string("C\x02zz\x85", 5) + ustr("big") + std::string("\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x40", 11) +
                  ustr("again") + "h\x01" + "u.";
  Unpickler up(reinterpret_cast<const uint8_t*>(s.data()), s.size(), "model.pkl");
  Value* root = unpickle(up);
  REQUIRE(root->kind == Kind::dict);
  REQUIRE(root->dict->entries.size() == 4);
  Value* a = dict_get(root, "a");
  REQUIRE(a);
  REQUIRE(a->kind == Kind::list);
  REQUIRE(a->items.size() == 6);
  CHECK(a->items[0]->i == 1);
  CHECK(a->items[1]->i == -2);
  CHECK(a->items[2]->f == 3.5);
  CHECK(a->items[3]->str == "x");
  CHECK(a->items[4]->kind == Kind::none);
  CHECK(a->items[5]->b);
  CHECK(root->dict->entries[1].first->i == 2);
  CHECK(root->dict->entries[1].second->items[0]->kind == Kind::bytes);
  CHECK(dict_get(root, "big")->kind == Kind::bigint);
  CHECK(dict_get(root, "again") == a);  // memo shares the object

  // Text INT and LONG1 edge cases.
  std::string t = "\x80\x02(I-42\nI01\n" + std::string("\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80", 10) +
                  std::string("\x8a\x02\xff\x00\x8a\x00l.", 8);
  Unpickler up2(reinterpret_cast<const uint8_t*>(t.data()), t.size(), "ints.pkl");
  Value* l = unpickle(up2);
  REQUIRE(l->items.size() == 5);
  CHECK(l->items[0]->i == -42);
  CHECK(l->items[1]->kind == Kind::boolean);
  CHECK(l->items[2]->i == INT64_MIN);
  CHECK(l->items[3]->i == 255);
  CHECK(l->items[4]->i == 0);
}

TEST_CASE("legacy files built by hand: views, nesting, hostile graphs", "[readers]") {
  TempDir tmp;
  const std::string path = tmp.file("hand.pt");
  auto read = [&](const std::string& bytes) {
    spit(path, bytes);
    return xlmr::read_checkpoint_file(path);
  };

  // Two tensors sharing one storage, one through a legacy storage view.
  {
    std::string view_pid = "(" + ustr("storage") + "ctorch\nFloatStorage\n" + ustr("k") + ustr("cpu") + "K\x06(" +
                           ustr("v") + "K\x02K\x03ttQ";
    std::string obj = "}(" + ustr("w") + tensor_pickle(float_storage_pid("k", 6), 0, {2, 3}, {3, 1}) + ustr("v") +
                      tensor_pickle(view_pid, 1, {2}, {1}) + "u";
    xlmr::Checkpoint ck = read(legacy_file(obj, {{"k", 6, floats({0, 1, 2, 3, 4, 5})}}));
    REQUIRE(ck.tensors.size() == 2);
    CHECK(values_of(ck.tensors[0]) == std::vector<double>{0, 1, 2, 3, 4, 5});
    CHECK(values_of(ck.tensors[1]) == std::vector<double>{3, 4});
    CHECK(ck.format == "torch-legacy");
  }
  // Stride-0 broadcast view materialises.
  {
    std::string obj = "}(" + ustr("b") + tensor_pickle(float_storage_pid("k", 2), 1, {3, 2}, {0, 0}) + "u";
    xlmr::Checkpoint ck = read(legacy_file(obj, {{"k", 2, floats({7, 9})}}));
    CHECK(values_of(ck.tensors[0]) == std::vector<double>(6, 9.0));
  }
  // Storage view outside its storage.
  {
    std::string view_pid = "(" + ustr("storage") + "ctorch\nFloatStorage\n" + ustr("k") + ustr("cpu") + "K\x02(" +
                           ustr("v") + "K\x01K\x05ttQ";
    std::string obj = "}(" + ustr("w") + tensor_pickle(view_pid, 0, {1}, {1}) + "u";
    CHECK_THAT(error_of([&] { read(legacy_file(obj, {{"k", 2, floats({0, 1})}})); }),
               Catch::Contains("outside its storage"));
  }
  // Offset past the storage end.
  {
    std::string obj = "}(" + ustr("w") + tensor_pickle(float_storage_pid("k", 2), 2, {1}, {1}) + "u";
    CHECK_THAT(error_of([&] { read(legacy_file(obj, {{"k", 2, floats({0, 1})}})); }),
               Catch::Contains("reaches element 2"));
  }
  // Huge size through stride 0: refused instead of allocating.
  {
    std::string obj = "}(" + ustr("w") + tensor_pickle(float_storage_pid("k", 1), 0, {1 << 30, 1 << 30}, {0, 0}) + "u";
    CHECK_THAT(error_of([&] { read(legacy_file(obj, {{"k", 1, floats({0})}})); }),
               Catch::Contains("implausible size"));
  }
  // Sparse views of one wide storage: reading each reads the storage from its
  // first element to its last, so a file naming many of them is refused like
  // one naming too many copies, though the views themselves are tiny.
  {
    const int n = 100000;
    auto views = [&](int count) {
      std::string obj = "}(";
      for (int i = 0; i < count; ++i) {
        obj += ustr("v" + std::to_string(i)) + tensor_pickle(float_storage_pid("k", n), 0, {2}, {n - 1});
      }
      return legacy_file(obj + "u", {{"k", uint64_t(n), floats(std::vector<float>(size_t(n), 1.5f))}});
    };
    xlmr::Checkpoint ck = read(views(3));
    REQUIRE(ck.tensors.size() == 3);
    CHECK(values_of(ck.tensors[2]) == std::vector<double>{1.5, 1.5});
    CHECK_THAT(error_of([&] { read(views(700)); }), Catch::Contains("far more bytes than the checkpoint stores"));
  }
  // Stored element count smaller than declared.
  {
    std::string obj = "}(" + ustr("w") + tensor_pickle(float_storage_pid("k", 4), 0, {4}, {1}) + "u";
    CHECK_THAT(error_of([&] { read(legacy_file(obj, {{"k", 2, floats({0, 1})}})); }),
               Catch::Contains("holds 2 elements, needs 4"));
  }
  // Storage listed but never used / used but not listed.
  {
    std::string obj = "}(" + ustr("w") + tensor_pickle(float_storage_pid("k", 1), 0, {1}, {1}) + "u";
    CHECK_THAT(error_of([&] { read(legacy_file(obj, {{"k", 1, floats({0})}, {"zz", 1, floats({0})}})); }),
               Catch::Contains("not used by any tensor"));
    CHECK_THAT(error_of([&] { read(legacy_file(obj, {})); }), Catch::Contains("has no data"));
  }
  // Duplicate flattened names: {'a.b': t, 'a': {'b': t}}.
  {
    std::string t = tensor_pickle(float_storage_pid("k", 1), 0, {1}, {1});
    std::string obj = "}(" + ustr("a.b") + t + "q\x00"s + ustr("a") + "}" + ustr("b") + "h\x00"s + "su";
    CHECK_THAT(error_of([&] { read(legacy_file(obj, {{"k", 1, floats({0})}})); }),
               Catch::Contains("duplicate tensor name 'a.b'"));
  }
  // Untrusted names stay on one line in messages.
  {
    std::string t = tensor_pickle(float_storage_pid("k", 1), 0, {1}, {1});
    std::string obj = "}(" + ustr("x\n.y") + t + "q\x00"s + ustr("x\n") + "}" + ustr("y") + "h\x00"s + "su";
    std::string msg = error_of([&] { read(legacy_file(obj, {{"k", 1, floats({0})}})); });
    CHECK_THAT(msg, Catch::Contains("duplicate tensor name 'x\\x0a.y'"));
    CHECK(msg.find('\n') == std::string::npos);
  }
  // A pickle larger than the reader's first read-ahead window.
  {
    const std::string big(3u << 20, 'x');
    std::string obj = "}(" + ustr("blob") + ustr(big) + ustr("w") +
                      tensor_pickle(float_storage_pid("k", 1), 0, {1}, {1}) + "u";
    xlmr::Checkpoint ck = read(legacy_file(obj, {{"k", 1, floats({2})}}));
    CHECK(ck.metadata["blob"].get<std::string>() == big);
    REQUIRE(ck.tensors.size() == 1);
    CHECK(values_of(ck.tensors[0]) == std::vector<double>{2});
  }
  // Tensors in a list are named by index; tensors under a float key are refused.
  {
    std::string t = tensor_pickle(float_storage_pid("k", 1), 0, {1}, {1});
    xlmr::Checkpoint ck = read(legacy_file("}(" + ustr("layers") + "]" + t + "q\x00" "ah\x00" "au"s,
                                           {{"k", 1, floats({5})}}));
    REQUIRE(ck.tensors.size() == 2);
    CHECK(ck.tensors[0].name == "layers.0");
    CHECK(ck.tensors[1].name == "layers.1");
    CHECK_THAT(error_of([&] {
                 read(legacy_file("}(" + std::string("G\x3f\xf0\x00\x00\x00\x00\x00\x00", 9) + t + "u",
                                  {{"k", 1, floats({5})}}));
               }),
               Catch::Contains("float dict key"));
  }
  // Very deep nesting: refused by the walk's depth limit.
  {
    std::string obj;
    for (int i = 0; i < 1000; ++i) obj += "}" + ustr("a");
    obj += "N";
    for (int i = 0; i < 1000; ++i) obj += "s";
    CHECK_THAT(error_of([&] { read(legacy_file(obj, {})); }), Catch::Contains("nests deeper than 256"));
  }
  // A DAG with 2^100 paths: refused by the walk budget, quickly.
  {
    std::string obj = "]q\x00"s;
    for (int i = 1; i <= 100; ++i) {
      obj += "(h" + std::string(1, char(i - 1)) + "h" + std::string(1, char(i - 1)) + "lq" + std::string(1, char(i));
    }
    CHECK_THAT(error_of([&] { read(legacy_file(obj, {})); }), Catch::Contains("too large to walk"));
  }
  // A list that contains itself.
  {
    std::string obj = "]q\x00h\x00" "a"s;
    CHECK_THAT(error_of([&] { read(legacy_file(obj, {})); }), Catch::Contains("nests deeper"));
  }
  // Root tensor, and the legacy protocol-version check.
  {
    std::string obj = tensor_pickle(float_storage_pid("k", 1), 0, {1}, {1});
    CHECK_THAT(error_of([&] { read(legacy_file(obj, {{"k", 1, floats({0})}})); }),
               Catch::Contains("single tensor"));
    std::string bad = legacy_file("}", {});
    bad[18] = '\xea';  // protocol version 1002
    CHECK_THAT(error_of([&] { read(bad); }), Catch::Contains("protocol version"));
  }
}

TEST_CASE("tensor bytes are read lazily, in any order, as often as asked", "[readers][lazy]") {
  const nlohmann::json expected = nlohmann::json::parse(slurp(fixture("expected.json")));
  TempDir tmp;
  // state_zip.pt and nested_legacy.pt hold transposed, offset and sliced
  // views of shared storages: each is gathered from its storage when read.
  for (const char* name : {"state_zip.pt", "nested_legacy.pt", "model.safetensors", "handmade_zip.pt"}) {
    INFO(name);
    const nlohmann::json& want = expected[name]["tensors"];
    std::vector<xlmr::SourceTensor> tensors;
    {
      const xlmr::Checkpoint ck = xlmr::read_checkpoint_file(fixture(name));
      REQUIRE(ck.tensors.size() == want.size());
      for (size_t i = ck.tensors.size(); i-- > 0;) {
        CHECK(values_of(ck.tensors[i]) == want[i]["values"].get<std::vector<double>>());
      }
      tensors = ck.tensors;
    }
    // The copies keep the file open after the checkpoint is gone; a second
    // read of each gives the same bytes, and one buffer serves them all.
    std::vector<uint8_t> buf;
    for (size_t i = 0; i < tensors.size(); ++i) {
      tensors[i].read(&buf);
      CHECK(buf == tensors[i].read());
      CHECK(buf.size() == tensors[i].nbytes());
      CHECK(values_of(tensors[i]) == want[i]["values"].get<std::vector<double>>());
    }
  }
}

TEST_CASE("compressed zip storages read through views like stored ones", "[readers][lazy]") {
  const nlohmann::json expected = nlohmann::json::parse(slurp(fixture("expected.json")));
  TempDir tmp;
  const std::string path = tmp.file("deflated.pt");
  const std::vector<uint8_t> raw = slurp(fixture("state_zip.pt"));
  const std::string zip(raw.begin(), raw.end());
  const std::vector<ZipMember> members = zip_members(zip);
  REQUIRE(members.size() > 3);
  // Compressed data cannot be seeked into: a view starting inside its storage
  // decodes and drops the bytes before it.
  spit(path, zip_archive(members, is_storage));
  {
    const xlmr::Checkpoint ck = xlmr::read_checkpoint_file(path);
    const nlohmann::json& want = expected["state_zip.pt"]["tensors"];
    REQUIRE(ck.tensors.size() == want.size());
    for (size_t i = ck.tensors.size(); i-- > 0;) {
      INFO(ck.tensors[i].name);
      CHECK(values_of(ck.tensors[i]) == want[i]["values"].get<std::vector<double>>());
    }
  }
  // A deflate stream that ends before its data: the directory is fine, so
  // the checkpoint opens, and the read is what finds the bytes missing. A
  // view that ends before the missing bytes still reads right.
  spit(path, zip_archive(members, is_storage, 3));
  const xlmr::Checkpoint ck = xlmr::read_checkpoint_file(path);
  const nlohmann::json& want = expected["state_zip.pt"]["tensors"];
  int failed = 0;
  for (size_t i = 0; i < ck.tensors.size(); ++i) {
    const xlmr::SourceTensor& t = ck.tensors[i];
    const std::string msg = error_of([&] { t.read(); });
    INFO(t.name << ": " << msg);
    if (msg == "NO ERROR") {
      CHECK(values_of(t) == want[i]["values"].get<std::vector<double>>());
      continue;
    }
    CHECK_THAT(msg, Catch::Contains(path) && Catch::Contains("zip entry"));
    CHECK(msg.find('\n') == std::string::npos);
    ++failed;
  }
  CHECK(failed >= 8);  // every tensor that reaches the end of its storage
}

TEST_CASE("a file that shrinks after it was opened fails the read, cleanly", "[readers][lazy]") {
  TempDir tmp;
  // A zip larger than stdio's buffer, which may still serve a small one.
  const std::string shard =
      std::string(XLMR_FIXTURES_DIR) + "/smoke/hf_fp16_sharded/pytorch_model-00001-of-00002.bin";
  for (const std::string& source : {shard, fixture("nested_legacy.pt"), fixture("model.safetensors"),
                                    fixture("handmade.safetensors")}) {
    INFO(source);
    const std::vector<uint8_t> full = slurp(source);
    for (const size_t keep : {full.size() / 2, size_t(0)}) {
      INFO("cut to " << keep << " bytes");
      const std::string name = fs::path(source).filename().string();
      const std::string path = tmp.file("shrink_" + std::to_string(keep) + "_" + name);
      spit(path, full.data(), full.size());
      const xlmr::Checkpoint ck = xlmr::read_checkpoint_file(path);
      std::vector<std::vector<uint8_t>> before;
      for (const xlmr::SourceTensor& t : ck.tensors) before.push_back(t.read());
      fs::resize_file(path, keep);
      int failed = 0;
      for (size_t i = 0; i < ck.tensors.size(); ++i) {
        // Either the tensor's bytes are still there and the same, or the
        // read is one xlmr::Error naming the file.
        std::vector<uint8_t> bytes;
        const std::string msg = error_of([&] { bytes = ck.tensors[i].read(); });
        if (msg == "NO ERROR") {
          CHECK(bytes == before[i]);
          continue;
        }
        CHECK_THAT(msg, Catch::Contains(path));
        CHECK(msg.find('\n') == std::string::npos);
        ++failed;
      }
      CHECK(failed > 0);
    }
  }
}
