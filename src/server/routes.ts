/**
 * Every API the server speaks, in one list: a new API is its adapter file and one line
 * here (the server, and the tests that fuzz every route, take their routes from this).
 * `state`: the server's state, for the live streams that end when it drains.
 */
import type { Route } from "./http.js";
import { modelRoutes } from "./models.js";
import { openAiRoutes } from "./openai.js";
import { responsesRoutes } from "./responses.js";
import { anthropicRoutes } from "./anthropic.js";

export const apiRoutes = (state: () => string): Route[] => [...modelRoutes(state), ...openAiRoutes, ...responsesRoutes, ...anthropicRoutes];
