import type { CodegenConfig } from "@graphql-codegen/cli";

// Typed documents from the contract (graphql_schema/schema.graphql) and the operations the app
// uses (graphql_schema/operations/*.graphql). documentMode "string" emits the query text itself,
// so the browser bundle needs no GraphQL parser or printer.
const config: CodegenConfig = {
  schema: "../graphql_schema/schema.graphql",
  documents: ["../graphql_schema/operations/*.graphql"],
  ignoreNoDocuments: false,
  generates: {
    "src/gql/": {
      preset: "client",
      presetConfig: { fragmentMasking: false },
      config: {
        documentMode: "string",
        useTypeImports: true,
        enumsAsTypes: true,
        scalars: { Date: "string", DateTime: "string", Decimal: "string", JSON: "unknown" },
        skipTypename: true,
      },
    },
  },
};
export default config;
