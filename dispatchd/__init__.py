"""dispatchd: command-centre dispatch for Zhejiang-style grid management (网格化管理).

Reports and calls come in from grid workers, hotlines and squads; the county command centre
accepts, routes and supervises them through the closed loop of a case (事件流转) down the
organisation tree province → city → county → township → community → grid.
"""

__version__ = "0.1.0"
