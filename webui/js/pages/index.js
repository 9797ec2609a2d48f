// The start page: the screens this user may open.
import { h } from "../dom.js";
import { onLanguageChange, t } from "../i18n.js";
import { startPage, topBar } from "../shell.js";

const SCREENS = [
  ["/board", "nav.board", "index.board", ["duty_officer", "leader", "admin", "ops", "department_handler"]],
  ["/console", "nav.console", "index.console", ["duty_officer", "leader", "admin", "department_handler"]],
  ["/stats", "nav.stats", "index.stats", ["duty_officer", "leader", "admin", "ops", "department_handler"]],
  ["/squad", "nav.squad", "index.squad", ["squad_member", "admin"]],
  ["/grid", "nav.grid", "index.grid", ["grid_worker", "admin"]],
  ["/admin", "nav.admin", "index.admin", ["admin"]],
];

async function main() {
  const { user } = await startPage();
  document.getElementById("top").replaceWith(topBar(user, { current: "/" }));
  const box = document.getElementById("screens");
  const render = () =>
    box.replaceChildren(
      ...SCREENS.filter(([, , , roles]) => roles.includes(user.role)).map(([href, name, desc]) =>
        h("a.screen-card", { href }, h("strong", t(name)), h("span", t(desc))),
      ),
    );
  render();
  onLanguageChange(render);
}

main();
