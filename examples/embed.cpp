// Embeds each command-line argument with a .xlmr model and prints the first
// values of each embedding: the C++ API (xlmr/engine.h).
//   embed_cpp MODEL.xlmr "text one" "text two" ...
#include <xlmr/engine.h>

#include <cstdio>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL.xlmr TEXT...\n", argv[0]);
    return 2;
  }
  try {
    xlmr::EngineOptions opts;  // CPU, fused path, all cores
    auto engine = xlmr::Engine::load(argv[1], opts);
    for (const std::string& n : engine->notes()) std::fprintf(stderr, "embed_cpp: note: %s\n", n.c_str());
    std::vector<std::string> texts(argv + 2, argv + argc);
    xlmr::EncodeOptions enc;  // the model's default pooling
    const auto results = engine->encode_texts(texts, enc);
    for (size_t i = 0; i < results.size(); ++i) {
      std::printf("%zu: %d tokens, embedding[0..2] = %.6f %.6f %.6f\n", i, results[i].n_tokens,
                  results[i].embedding[0], results[i].embedding[1], results[i].embedding[2]);
    }
  } catch (const xlmr::Error& e) {
    std::fprintf(stderr, "embed_cpp: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
