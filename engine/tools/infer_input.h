// xlmr-infer's input side: lines read in bounded chunks from files or
// standard input, and each line turned into one record (a text, a text pair
// or token ids) according to --input-format. Every error names FILE:LINE.
#pragma once

#include <cstdint>
#include <fstream>
#include <istream>
#include <memory>
#include <string>
#include <vector>

namespace xlmr::tools {

struct Line {
  std::string text;   // without the line break (and without a '\r' before it)
  std::string where;  // "file:line" for messages
};

class LineReader {
 public:
  // files: none, or "-", is standard input. A line longer than max_line_bytes
  // is an error naming it (a binary file given by mistake must not be read
  // into memory whole).
  explicit LineReader(std::vector<std::string> files, size_t max_line_bytes = kDefaultMaxLineBytes);
  static constexpr size_t kDefaultMaxLineBytes = size_t(64) << 20;
  // Reads up to n lines into *out (cleared first); false at the end of all
  // inputs. Waits for the first line; after it, stops early where the input
  // has nothing more ready (a pipe, named pipe or terminal whose writer waits
  // for the answers to what it wrote).
  bool next(size_t n, std::vector<Line>* out);
  // Whether reading can go on without waiting: a regular file, bytes in the
  // stream's buffer, or an input that is not a regular file (standard input,
  // a named pipe, a terminal) with bytes or its end ready. An input not yet
  // opened that is not a regular file counts as not ready: opening a named
  // pipe waits for its writer. Standard input is read through std::cin, which
  // must not be synchronised with stdio (std::ios::sync_with_stdio(false)):
  // stdio's own buffer would hide bytes from this check.
  bool ready();
  uint64_t bytes_read() const { return bytes_; }
  // Sum of the input sizes when every input is a regular file, else 0.
  uint64_t total_bytes() const { return total_; }

 private:
  bool open_next();
  bool read_line(std::string* s);
  std::vector<std::string> files_;
  size_t max_line_ = 0;
  size_t next_file_ = 0;
  // A named input: a regular file through std::ifstream, anything else
  // (a named pipe, a device) through fd_buf_, so that ready() can poll fd_.
  std::unique_ptr<std::streambuf> fd_buf_;
  std::unique_ptr<std::istream> file_;
  std::istream* in_ = nullptr;
  int fd_ = -1;  // what ready() polls: the input's descriptor when it is not a regular file
  std::string name_;
  size_t line_no_ = 0;
  uint64_t bytes_ = 0, total_ = 0;
};

enum class InputFormat { text, ids, jsonl, tsv_pairs };

// Parses --input-format's value; false when unknown.
bool parse_input_format(const std::string& s, InputFormat* out);

struct RecordOptions {
  InputFormat format = InputFormat::text;
  std::string text_field = "text";  // jsonl
  std::string pair_field;           // jsonl; empty: single texts
  int vocab_size = 0;               // ids: ids must be below this
  int max_length = 0;               // ids: at most this many per line
};

struct Record {
  std::string a, b;  // text, and the second text of a pair
  std::vector<int32_t> ids;
};

// One input line as a record; throws xlmr::Error("FILE:LINE: ...") when the
// line does not fit the format. Consumes line->text.
Record parse_record(Line* line, const RecordOptions& opts);

}  // namespace xlmr::tools
