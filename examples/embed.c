/* Embeds each command-line argument with a .xlmr model and prints the first
 * values of each embedding: the C API (xlmr/engine_c.h).
 *   embed_c MODEL.xlmr "text one" "text two" ... */
#include <xlmr/engine_c.h>

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s MODEL.xlmr TEXT...\n", argv[0]);
    return 2;
  }
  xlmr_engine* e = xlmr_engine_create();
  if (!e) return 1;
  xlmr_params p = xlmr_default_params();
  if (xlmr_engine_load(e, argv[1], &p) != XLMR_OK) {
    fprintf(stderr, "embed_c: error: %s\n", xlmr_engine_last_error(e));
    xlmr_engine_destroy(e);
    return 1;
  }
  /* What the engine chose for this machine that a user should know, if anything. */
  if (*xlmr_engine_notes(e)) fprintf(stderr, "embed_c: note: %s\n", xlmr_engine_notes(e));
  const size_t n = (size_t)(argc - 2);
  const int E = xlmr_engine_hidden_size(e);
  float* emb = malloc(sizeof(float) * n * (size_t)E);
  int32_t* n_tokens = malloc(sizeof(int32_t) * n);
  xlmr_encode_params ep = xlmr_default_encode_params();
  int rc = 0;
  if (!emb || !n_tokens ||
      xlmr_encode_texts(e, (const char* const*)(argv + 2), n, &ep, emb, NULL, n_tokens) != XLMR_OK) {
    fprintf(stderr, "embed_c: error: %s\n", emb && n_tokens ? xlmr_engine_last_error(e) : "out of memory");
    rc = 1;
  } else {
    for (size_t i = 0; i < n; ++i)
      printf("%zu: %d tokens, embedding[0..2] = %.6f %.6f %.6f\n", i, (int)n_tokens[i], emb[i * E], emb[i * E + 1],
             emb[i * E + 2]);
  }
  free(emb);
  free(n_tokens);
  xlmr_engine_destroy(e);
  return rc;
}
